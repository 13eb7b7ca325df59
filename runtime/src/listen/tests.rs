use super::*;

#[tokio::test(start_paused = true)]
async fn a_connection_is_idle_only_after_its_last_call_ends() {
    let activity = Arc::new(Activity::new());
    let timeout = Duration::from_secs(60);
    let start = Instant::now();
    // No call at all: idle after the timeout.
    activity.idle_for(timeout).await;
    assert_eq!(start.elapsed(), timeout);

    // A call open for 200 s keeps the connection busy; idleness counts
    // from when it ends.
    let call = activity.start();
    let held = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(200)).await;
        drop(call);
    });
    let start = Instant::now();
    activity.idle_for(timeout).await;
    held.await.unwrap();
    assert!(
        start.elapsed() >= Duration::from_secs(260),
        "{:?}",
        start.elapsed()
    );
    assert!(
        start.elapsed() < Duration::from_secs(330),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn a_peer_gets_at_most_its_share_of_connections() {
    let shared = Arc::new(Shared {
        limits: Limits {
            max_connections: 5,
            max_connections_per_peer: 2,
            ..Limits::default()
        },
        slots: Arc::new(Semaphore::new(5)),
        per_peer: Mutex::new(HashMap::new()),
        refused: Counter::default(),
    });
    let a: IpAddr = [127, 0, 0, 2].into();
    let b: IpAddr = [127, 0, 0, 3].into();
    let first = shared.admit(a).unwrap();
    let _second = shared.admit(a).unwrap();
    assert!(shared.admit(a).is_none(), "a third from one peer");
    let others: Vec<_> = (0..3).map(|_| shared.admit(b)).collect();
    assert_eq!(others.iter().filter(|o| o.is_some()).count(), 2);
    drop(first);
    let _again = shared.admit(a).expect("a place freed is a place again");
    let _fifth = shared.admit([127, 0, 0, 4].into()).unwrap();
    assert!(
        shared.admit([127, 0, 0, 5].into()).is_none(),
        "the listener is full"
    );
}
