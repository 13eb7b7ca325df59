//! Choices in PostgreSQL, shared by server replicas: a throwaway cluster
//! of Debian's PostgreSQL, two (or three) real servers on one database, a
//! real sidecar. A withdrawal written through one replica is enforced
//! through the other within a second; replicas starting together migrate
//! once; a database that is down never lets a permit through that a
//! choice may forbid.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers: a failed setup must fail the test"
)]

use std::time::{Duration, Instant};

use pb::choices_service_client::ChoicesServiceClient;
use pb::decision_service_client::DecisionServiceClient;
use purposegate_proto::v1 as pb;
use purposegate_tests::postgres::PostgresCluster;
use purposegate_tests::{
    CONSENT_POLICY, ServerProcess, SidecarProcess, TempDir, channel, choices_server, consent,
    marketing_check,
};

/// A cluster with a database `name`, its URL, and a directory holding the
/// policy file (the one [`CONSENT_POLICY`]).
fn setup(name: &str) -> (PostgresCluster, String, TempDir, String) {
    let cluster = PostgresCluster::start();
    let url = cluster.database(name);
    let dir = TempDir::new(&format!("choices-postgres-{name}"));
    let policy = dir.write("choices.yaml", CONSENT_POLICY);
    (cluster, url, dir, policy)
}

async fn decision(server: &ServerProcess, subject: &str) -> pb::CheckResponse {
    DecisionServiceClient::new(channel(&server.url()).await)
        .check(marketing_check(subject))
        .await
        .unwrap()
        .into_inner()
}

/// A sidecar asking `pdp`, in front of an app whose `/records/` hold
/// customer data; and the app.
fn sidecar_before_records(
    dir: &TempDir,
    pdp: &str,
) -> (SidecarProcess, purposegate_tests::app::FrameworkApp) {
    let routes = dir.write(
        "routes.yaml",
        "routes:\n  - http: /records/\n    dataCategory: customer-data\n",
    );
    let app = purposegate_tests::app::FrameworkApp::start();
    let upstream = app.url();
    let sidecar = SidecarProcess::start(pdp, &["--upstream", &upstream, "--routes", &routes], &[]);
    (sidecar, app)
}

/// A GET of a record of `subject`'s for marketing through `sidecar`: the
/// status.
fn marketing_get(sidecar: &SidecarProcess, subject: &str) -> u16 {
    purposegate_tests::contexts::proxy_get(
        sidecar,
        "/records/1",
        &[
            "x-purpose: marketing",
            "x-data-tenant: contoso",
            &format!("x-data-subject: {subject}"),
        ],
    )
    .0
}

/// `u-42`'s consent granted through `writer`, and permitted by `reader`.
async fn grant(writer: &ServerProcess, reader: &ServerProcess) {
    ChoicesServiceClient::new(channel(&writer.url()).await)
        .record_choice(consent("u-42", pb::ChoiceState::Granted))
        .await
        .unwrap();
    within_5s("permitted", || async {
        decision(reader, "u-42").await.decision() == pb::Decision::Permit
    })
    .await;
}

/// `request` recorded through `writer` right after the database ended the
/// server's connections: tried again (twice at most) while the server
/// says it could not reach the database, as a client does with
/// `UNAVAILABLE`; the last answer.
async fn record_after_kill(
    writer: &mut ChoicesServiceClient<tonic::transport::Channel>,
    request: pb::RecordChoiceRequest,
) -> Result<pb::ChoiceRecord, tonic::Status> {
    for _ in 0..2 {
        match writer.record_choice(request.clone()).await {
            Err(e)
                if e.code() == tonic::Code::Unavailable && !e.message().contains("read-only") =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            answer => return answer.map(tonic::Response::into_inner),
        }
    }
    writer
        .record_choice(request)
        .await
        .map(tonic::Response::into_inner)
}

/// The exit code and stderr of the server run with `args`, which must end
/// on its own within 20 s (it is killed then, and the code is `None`).
fn exit_of(args: &[&str]) -> (Option<i32>, String) {
    let mut child = std::process::Command::new(purposegate_tests::binary("purposegate-server"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    (code, stderr)
}

/// How long until `probe` holds, polled every 10 ms for at most 5 s.
async fn within_5s<F, Fut>(what: &str, mut probe: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !probe().await {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{what}: not within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

#[tokio::test]
async fn a_withdrawal_through_either_replica_is_enforced_through_the_other_within_a_second() {
    let (cluster, url, dir, policy) = setup("replicas");
    // Replicas starting together create the schema once.
    let (a, b, c) = (
        std::thread::spawn({
            let (p, u) = (policy.clone(), url.clone());
            move || choices_server(&p, &["--choices-db", &u])
        }),
        std::thread::spawn({
            let (p, u) = (policy.clone(), url.clone());
            move || choices_server(&p, &["--choices-db", &u])
        }),
        std::thread::spawn({
            let (p, u) = (policy.clone(), url.clone());
            move || choices_server(&p, &["--choices-db", &u])
        }),
    );
    let (a, b, c) = (a.join().unwrap(), b.join().unwrap(), c.join().unwrap());
    drop(c);
    assert_eq!(
        cluster.psql(
            "replicas",
            "SELECT key || '=' || value FROM purposegate.meta ORDER BY key"
        ),
        "revision=0\nschema=1\n"
    );
    let (sidecar, _app) = sidecar_before_records(&dir, &b.url());
    let get = |subject: &str| marketing_get(&sidecar, subject);
    // Granted through A: B permits, and its sidecar lets the call through
    // (and caches the permit).
    let mut writer = ChoicesServiceClient::new(channel(&a.url()).await);
    grant(&a, &b).await;
    within_5s("the sidecar on B lets it through", || async {
        get("u-42") == 200
    })
    .await;
    // Withdrawn through A: B denies, and so does B's sidecar, within a
    // second of the commit.
    writer
        .record_choice(consent("u-42", pb::ChoiceState::Withdrawn))
        .await
        .unwrap();
    let committed = Instant::now();
    within_5s("the sidecar on B denies", || async { get("u-42") == 403 }).await;
    let enforced = committed.elapsed();
    assert!(enforced < Duration::from_secs(1), "{enforced:?}");
    let answer = decision(&b, "u-42").await;
    assert_eq!(answer.decision(), pb::Decision::Deny, "{answer:?}");
    assert_eq!(answer.choices_revision, Some(2));
    // And the other way: through B, enforced by a sidecar attached to A.
    let (sidecar_a, _app_a) = sidecar_before_records(&dir, &a.url());
    grant(&b, &a).await;
    within_5s("the sidecar on A lets it through", || async {
        marketing_get(&sidecar_a, "u-42") == 200
    })
    .await;
    ChoicesServiceClient::new(channel(&b.url()).await)
        .record_choice(consent("u-42", pb::ChoiceState::Withdrawn))
        .await
        .unwrap();
    let committed = Instant::now();
    within_5s("the sidecar on A denies", || async {
        marketing_get(&sidecar_a, "u-42") == 403
    })
    .await;
    let enforced = committed.elapsed();
    assert!(enforced < Duration::from_secs(1), "{enforced:?}");
    // The history is one, whichever replica is asked.
    let events = cluster.psql(
        "replicas",
        "SELECT revision || ':' || state FROM purposegate.events ORDER BY revision",
    );
    assert_eq!(events, "1:granted\n2:withdrawn\n3:granted\n4:withdrawn\n");
}

#[tokio::test]
async fn a_database_that_is_down_lets_no_cached_permit_through() {
    let (cluster, url, _dir, policy) = setup("down");
    let server = choices_server(&policy, &["--choices-db", &url]);
    grant(&server, &server).await;
    // Down: the cache stops serving within a second, and the decision
    // needs choices it cannot read.
    cluster.pg_ctl("stop -m immediate");
    let stopped = Instant::now();
    within_5s("no longer permitted", || async {
        decision(&server, "u-42").await.decision() == pb::Decision::Indeterminate
    })
    .await;
    assert!(
        stopped.elapsed() < Duration::from_secs(2),
        "{:?}",
        stopped.elapsed()
    );
    // A write is refused while it is down, naming the database.
    let refused = ChoicesServiceClient::new(channel(&server.url()).await)
        .record_choice(consent("u-42", pb::ChoiceState::Withdrawn))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("choices database"),
        "{refused:?}"
    );
    // Back: decisions on the stored choices again.
    cluster.pg_ctl("start -w -t 30");
    within_5s("permitted again", || async {
        decision(&server, "u-42").await.decision() == pb::Decision::Permit
    })
    .await;
}

#[tokio::test]
async fn killed_connections_and_a_read_only_database_leave_the_store_consistent() {
    let (cluster, url, _dir, policy) = setup("faults");
    let server = choices_server(&policy, &["--choices-db", &url]);
    let mut writer = ChoicesServiceClient::new(channel(&server.url()).await);
    writer
        .record_choice(consent("u-1", pb::ChoiceState::Granted))
        .await
        .unwrap();
    // Every connection ended under the server: the next write and read
    // are made on new ones (a write the server could not tell whether it
    // reached the database is UNAVAILABLE, which a client tries again).
    cluster.terminate_servers_connections();
    record_after_kill(&mut writer, consent("u-2", pb::ChoiceState::Granted))
        .await
        .unwrap();
    assert_eq!(
        decision(&server, "u-2").await.decision(),
        pb::Decision::Permit
    );
    // A database that refuses writes: the write fails inside its
    // transaction, and nothing of it stays.
    cluster.psql(
        "postgres",
        "ALTER DATABASE faults SET default_transaction_read_only = on",
    );
    cluster.terminate_servers_connections();
    let refused = record_after_kill(&mut writer, consent("u-1", pb::ChoiceState::Withdrawn))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("read-only"), "{refused:?}");
    let state = "SELECT (SELECT value FROM purposegate.meta WHERE key = 'revision') || ' ' || (SELECT count(*) FROM purposegate.events)";
    assert_eq!(cluster.psql("faults", state), "2 2\n");
    // The consent of u-1 still holds: the refused withdrawal is not there.
    assert_eq!(
        decision(&server, "u-1").await.decision(),
        pb::Decision::Permit
    );
    cluster.psql(
        "postgres",
        "ALTER DATABASE faults SET default_transaction_read_only = off",
    );
    cluster.terminate_servers_connections();
    record_after_kill(&mut writer, consent("u-1", pb::ChoiceState::Withdrawn))
        .await
        .unwrap();
    assert_eq!(cluster.psql("faults", state), "3 3\n");
    within_5s("denied", || async {
        decision(&server, "u-1").await.decision() == pb::Decision::Deny
    })
    .await;
    // Every current choice is the latest event of its key.
    let stale = cluster.psql(
        "faults",
        "SELECT count(*) FROM purposegate.current c WHERE c.revision <> (SELECT max(e.revision) FROM purposegate.events e WHERE e.tenant = c.tenant AND e.data_subject = c.data_subject AND e.purpose = c.purpose)",
    );
    assert_eq!(stale, "0\n");
}

#[tokio::test]
async fn a_paused_database_lets_no_cached_permit_through_past_the_stale_window() {
    let (cluster, url, _dir, policy) = setup("paused");
    let a = choices_server(&policy, &["--choices-db", &url]);
    let b = choices_server(&policy, &["--choices-db", &url]);
    let mut writer = ChoicesServiceClient::new(channel(&a.url()).await);
    grant(&a, &b).await;
    // Withdrawn through A, and the database hangs at once: B may not have
    // read the withdrawal, and must stop trusting its cache all the same.
    writer
        .record_choice(consent("u-42", pb::ChoiceState::Withdrawn))
        .await
        .unwrap();
    let committed = Instant::now();
    cluster.signal("STOP");
    let mut client = DecisionServiceClient::new(channel(&b.url()).await);
    let mut late_permits = 0;
    while committed.elapsed() < Duration::from_secs(3) {
        let answer = client
            .check(marketing_check("u-42"))
            .await
            .unwrap()
            .into_inner();
        if answer.decision() == pb::Decision::Permit && committed.elapsed() > Duration::from_secs(1)
        {
            late_permits += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // What needs no choice is answered all along.
    let plain = Instant::now();
    let provide = client
        .check(purposegate_tests::check_request("provide", "customer-data"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(provide.decision(), pb::Decision::Permit);
    assert!(
        plain.elapsed() < Duration::from_secs(1),
        "{:?}",
        plain.elapsed()
    );
    cluster.signal("CONT");
    assert_eq!(
        late_permits, 0,
        "B served its cached permit past its stale window"
    );
    within_5s("B denies", || async {
        decision(&b, "u-42").await.decision() == pb::Decision::Deny
    })
    .await;
}

#[tokio::test]
async fn over_tls_the_database_certificate_is_verified() {
    let dir = TempDir::new("choices-postgres-tls");
    let pki = purposegate_tests::Pki::new(dir.path(), "db-ca");
    let (certificate, key) = pki.issue("db", "IP:127.0.0.1,DNS:localhost");
    let cluster = PostgresCluster::start_with_tls(&certificate, &key);
    let url = format!("{}?sslmode=require", cluster.database("tls"));
    let policy = dir.write("choices.yaml", CONSENT_POLICY);
    let server = choices_server(
        &policy,
        &["--choices-db", &url, "--choices-db-ca", &pki.ca()],
    );
    grant(&server, &server).await;
    // Every connection of the server is TLS.
    let plain = cluster.psql(
        "postgres",
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE application_name = 'purposegate-server' AND NOT ssl",
    );
    assert_eq!(plain, "0\n");
    let tls = cluster.psql(
        "postgres",
        "SELECT count(*) > 0 FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE application_name = 'purposegate-server' AND ssl",
    );
    assert_eq!(tls, "t\n");
    // Another CA's bundle: the server does not start, saying why; nor
    // does a URL that asks for TLS without a bundle to verify it.
    let other = purposegate_tests::Pki::new(dir.path(), "other-ca");
    for (args, says) in [
        (
            vec!["--choices-db", url.as_str(), "--choices-db-ca", &other.ca()],
            "certificate",
        ),
        (vec!["--choices-db", url.as_str()], "--choices-db-ca"),
    ] {
        let mut all = vec![
            "--policy",
            policy.as_str(),
            "--listen",
            "127.0.0.1:0",
            "--authzen-listen",
            "off",
            "--metrics-listen",
            "127.0.0.1:0",
        ];
        all.extend(args);
        let (code, stderr) = exit_of(&all);
        assert!(matches!(code, Some(c) if c != 0), "{code:?} {stderr}");
        assert!(stderr.contains(says), "{says}: {stderr}");
    }
}

// Several workers: the relay runs while a test thread waits on curl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_whose_replica_is_killed_resumes_on_another_and_serves_no_stale_permit() {
    let (cluster, url, dir, policy) = setup("failover");
    let a = choices_server(&policy, &["--choices-db", &url]);
    let b = choices_server(&policy, &["--choices-db", &url]);
    // The sidecar reaches the replicas as through a Service: B first.
    let service = purposegate_tests::FailoverRelay::start(vec![b.addr, a.addr]).await;
    let (sidecar, _app) = sidecar_before_records(&dir, &format!("http://{}", service.addr));
    let get = |subject: &str| marketing_get(&sidecar, subject);
    grant(&a, &a).await;
    within_5s("the sidecar lets it through", || async {
        get("u-42") == 200
    })
    .await;
    // B killed, and the consent withdrawn through A at once: whatever the
    // sidecar had cached from B, no permit past its stale window (1 s).
    b.signal("KILL");
    ChoicesServiceClient::new(channel(&a.url()).await)
        .record_choice(consent("u-42", pb::ChoiceState::Withdrawn))
        .await
        .unwrap();
    let withdrawn = Instant::now();
    let mut late_permits = 0;
    let mut last = 0;
    while withdrawn.elapsed() < Duration::from_secs(3) {
        last = get("u-42");
        if last == 200 && withdrawn.elapsed() > Duration::from_millis(1200) {
            late_permits += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(late_permits, 0, "a permit served past the stale window");
    assert_eq!(last, 403);
    // The sidecar follows A now: a grant through A reaches it again.
    ChoicesServiceClient::new(channel(&a.url()).await)
        .record_choice(consent("u-42", pb::ChoiceState::Granted))
        .await
        .unwrap();
    within_5s("permitted again, through A", || async {
        get("u-42") == 200
    })
    .await;
    drop(cluster);
}
