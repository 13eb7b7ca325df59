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
