use super::*;
use crate::testing::fake_gate;

fn supervisor(idle: Duration) -> (Supervisor, watch::Sender<Option<pb::PolicyRevision>>) {
    let (tx, revisions) = watch::channel(None);
    (
        Supervisor::new(fake_gate(), revisions, Duration::from_secs(3600), idle),
        tx,
    )
}

/// A call let through without a question (watched for idleness only).
fn unjudged(closer: &Closer) -> Watched {
    Watched {
        permitted: None,
        closer: closer.clone(),
        inherited_until: None,
    }
}

#[tokio::test(start_paused = true)]
async fn a_call_that_moves_no_data_ends_after_the_idle_timeout() {
    let (supervisor, _tx) = supervisor(Duration::from_secs(60));
    let closer = Closer::default();
    let mut call = supervisor.watch(unjudged(&closer));
    let start = Instant::now();
    // Data moves at 30 s: the call idles from then on.
    let mover = call.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        mover.moved();
    });
    let refusal = call.ended().await;
    assert_eq!(refusal.kind, crate::refusal::RefusalKind::Idle);
    assert!(
        refusal.reason.contains("--call-idle-timeout"),
        "{refusal:?}"
    );
    assert_eq!(start.elapsed(), Duration::from_secs(90));
    // Its bodies still held a second later (a caller that does not
    // read): the connection is closed under them.
    tokio::time::timeout(Duration::from_millis(1100), closer.asked())
        .await
        .expect("the connection was asked to close");
}

#[tokio::test(start_paused = true)]
async fn a_call_ends_when_the_context_it_inherited_expires() {
    let (supervisor, _tx) = supervisor(Duration::from_secs(600));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut call = supervisor.watch(Watched {
        permitted: None,
        closer: Closer::default(),
        inherited_until: Some(now + 2),
    });
    let start = Instant::now();
    let refusal = call.ended().await;
    assert!(refusal.reason.contains("inherited expired"), "{refusal:?}");
    // Past its last second, and no later than a second after it.
    let took = start.elapsed();
    assert!(
        took > Duration::from_secs(2) && took <= Duration::from_secs(3),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_ended_call_whose_bodies_go_leaves_its_connection_open() {
    let (supervisor, _tx) = supervisor(Duration::from_secs(5));
    let closer = Closer::default();
    let mut call = supervisor.watch(unjudged(&closer));
    call.ended().await;
    drop(call);
    assert!(
        tokio::time::timeout(Duration::from_secs(10), closer.asked())
            .await
            .is_err(),
        "a call whose bodies went does not close its connection"
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_over_before_its_supervisor_would_start_costs_none() {
    let (supervisor, _tx) = supervisor(Duration::from_secs(5));
    let watched = || unjudged(&Closer::default());
    // Over within START_AFTER: never supervised.
    let quick = supervisor.watch(watched());
    tokio::time::sleep(START_AFTER / 2).await;
    drop(quick);
    tokio::time::sleep(START_AFTER * 2).await;
    assert_eq!(supervisor.started(), 0);
    // Open past it: supervised.
    let _held = supervisor.watch(watched());
    tokio::time::sleep(START_AFTER * 2).await;
    assert_eq!(supervisor.started(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_call_is_watched_while_any_handle_of_it_remains() {
    let (supervisor, _tx) = supervisor(Duration::from_secs(5));
    let call = supervisor.watch(unjudged(&Closer::default()));
    let mut other = call.clone();
    drop(call);
    // One handle left: still watched, ended when idle (not for a
    // supervision that stopped), after the idle timeout.
    let start = Instant::now();
    let refusal = tokio::time::timeout(Duration::from_secs(6), other.ended())
        .await
        .expect("ended within the idle timeout");
    assert_eq!(
        refusal.kind,
        crate::refusal::RefusalKind::Idle,
        "{refusal:?}"
    );
    assert_eq!(start.elapsed(), Duration::from_secs(5));
}
