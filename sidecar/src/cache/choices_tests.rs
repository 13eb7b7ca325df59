//! The decision cache and changes of choices (paused clock).

use super::*;

fn limits() -> CacheLimits {
    CacheLimits {
        max_entries: 1000,
        max_bytes: 1 << 20,
        stale_window: Duration::from_secs(30),
        deny_ttl: Duration::from_secs(5),
    }
}

fn request(tenant: &str, subject: &str) -> pb::CheckRequest {
    pb::CheckRequest {
        resource: Some(pb::Resource {
            category: "customer-data".into(),
            owner_tenant: tenant.into(),
            data_subject: subject.into(),
            ..Default::default()
        }),
        purpose: "marketing".into(),
        ..Default::default()
    }
}

/// A permit that read choices at `revision`: 1 s unwatched, 300 s watched.
fn permit(revision: u64) -> pb::CheckResponse {
    pb::CheckResponse {
        decision: pb::Decision::Permit.into(),
        policy_revision: "r1".into(),
        ttl_seconds: 1,
        watched_ttl_seconds: 300,
        choices_revision: Some(revision),
        ..Default::default()
    }
}

async fn ask(cache: &DecisionCache, tenant: &str, subject: &str, revision: u64) -> Source {
    cache
        .get_or_ask(&request(tenant, subject), || async { Ok(permit(revision)) })
        .await
        .unwrap()
        .1
}

fn cache() -> DecisionCache {
    let cache = DecisionCache::new(limits(), CacheMetrics::default());
    cache.set_revision("r1");
    cache
}

#[tokio::test(start_paused = true)]
async fn a_change_evicts_exactly_its_subject_and_a_tenant_change_all_of_its_tenant() {
    let cache = cache();
    cache.choices_flushed(0);
    cache.choices_watch_alive(Duration::from_secs(1));
    for (tenant, subject) in [("acme", "u-1"), ("acme", "u-2"), ("other", "u-1")] {
        assert_eq!(ask(&cache, tenant, subject, 0).await, Source::Miss);
    }
    assert_eq!(cache.choices_changed("acme", "u-1", 1), 1);
    assert_eq!(ask(&cache, "acme", "u-2", 0).await, Source::Hit);
    assert_eq!(ask(&cache, "other", "u-1", 0).await, Source::Hit);
    assert_eq!(ask(&cache, "acme", "u-1", 1).await, Source::Miss);
    // The tenant's own configuration: every entry of the tenant.
    assert_eq!(cache.choices_changed("acme", "", 2), 2);
    assert_eq!(ask(&cache, "other", "u-1", 0).await, Source::Hit);
    // A gap: everything that read choices.
    assert_eq!(cache.choices_flushed(10), 1);
    assert_eq!(cache.len(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_answer_read_before_a_change_that_came_while_it_was_on_its_way_is_not_kept() {
    let cache = cache();
    cache.choices_flushed(4);
    cache.choices_watch_alive(Duration::from_secs(60));
    let (_, source) = cache
        .get_or_ask(&request("acme", "u-1"), || async {
            // The PDP read the choices at 5; the withdrawal at 6 is
            // announced before its answer lands.
            cache.choices_changed("acme", "u-1", 6);
            Ok(permit(5))
        })
        .await
        .unwrap();
    assert_eq!(source, Source::Miss);
    assert_eq!(cache.len(), 0, "used once, not kept");
    // Another subject's change does not stop it; one read after does not.
    assert_eq!(ask(&cache, "acme", "u-2", 5).await, Source::Miss);
    assert_eq!(ask(&cache, "acme", "u-1", 6).await, Source::Miss);
    assert_eq!(cache.len(), 2);
    // Read before the last flush: not known current, not kept.
    cache.choices_flushed(20);
    assert_eq!(ask(&cache, "acme", "u-3", 19).await, Source::Miss);
    assert_eq!(ask(&cache, "acme", "u-3", 19).await, Source::Miss);
}

#[tokio::test(start_paused = true)]
async fn without_a_live_watch_an_answer_that_read_choices_lasts_its_own_ttl_and_is_never_stale() {
    let cache = cache();
    cache.choices_flushed(0);
    cache.choices_watch_alive(Duration::from_secs(1));
    assert_eq!(ask(&cache, "acme", "u-1", 0).await, Source::Miss);
    tokio::time::advance(Duration::from_millis(1500)).await;
    // Past its 1 s TTL with the watch silent for 1.5 s: asked again.
    assert_eq!(ask(&cache, "acme", "u-1", 0).await, Source::Miss);
    // While the watch speaks, it lasts its watched TTL.
    for _ in 0..5 {
        cache.choices_watch_alive(Duration::from_secs(1));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(ask(&cache, "acme", "u-1", 0).await, Source::Hit);
    }
    // The PDP away and the watch ended: never served stale.
    cache.choices_watch_ended();
    tokio::time::advance(Duration::from_secs(2)).await;
    let gone = cache
        .get_or_ask(&request("acme", "u-1"), || async {
            Err(tonic::Status::unavailable("away"))
        })
        .await;
    assert!(gone.is_err(), "{gone:?}");
}
