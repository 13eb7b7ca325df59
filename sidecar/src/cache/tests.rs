use super::*;

fn limits(max_entries: usize, max_bytes: usize) -> CacheLimits {
    CacheLimits {
        max_entries,
        max_bytes,
        stale_window: Duration::ZERO,
        deny_ttl: Duration::from_secs(5),
    }
}

fn request(subject: &str) -> pb::CheckRequest {
    pb::CheckRequest {
        subject: Some(pb::Subject {
            id: subject.into(),
            ..Default::default()
        }),
        resource: Some(pb::Resource {
            category: "customer-data".into(),
            ..Default::default()
        }),
        purpose: "provide".into(),
        ..Default::default()
    }
}

fn answer(decision: pb::Decision, ttl: u32) -> pb::CheckResponse {
    pb::CheckResponse {
        decision: decision.into(),
        reason: "because".into(),
        policy_revision: "r1".into(),
        ttl_seconds: ttl,
        ..Default::default()
    }
}

async fn ask(cache: &DecisionCache, subject: &str, decision: pb::Decision) -> Source {
    let (_, source) = cache
        .get_or_ask(&request(subject), || async { Ok(answer(decision, 300)) })
        .await
        .unwrap();
    source
}

#[tokio::test(start_paused = true)]
async fn the_cache_stays_within_its_bytes_oldest_first() {
    let cache = DecisionCache::new(limits(1_000_000, 10 * 1024), CacheMetrics::default());
    cache.set_revision("r1");
    for i in 0..100 {
        ask(&cache, &format!("s{i}"), pb::Decision::Permit).await;
        assert!(cache.bytes() <= 10 * 1024, "{} bytes", cache.bytes());
    }
    assert!(cache.len() < 100 && cache.len() > 5, "{}", cache.len());
    // The newest is kept, the oldest went.
    assert_eq!(ask(&cache, "s99", pb::Decision::Permit).await, Source::Hit);
    assert_eq!(ask(&cache, "s0", pb::Decision::Permit).await, Source::Miss);
    // A flush gives every byte back.
    cache.set_revision("r2");
    assert_eq!((cache.len(), cache.bytes()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn denials_are_kept_briefly_and_expired_entries_are_swept() {
    let cache = DecisionCache::new(limits(1000, 1 << 20), CacheMetrics::default());
    cache.set_revision("r1");
    ask(&cache, "denied", pb::Decision::Deny).await;
    ask(&cache, "permitted", pb::Decision::Permit).await;
    assert_eq!(ask(&cache, "denied", pb::Decision::Deny).await, Source::Hit);
    tokio::time::advance(Duration::from_secs(6)).await;
    assert_eq!(cache.sweep(), 1, "the denial expired after 5 s");
    assert_eq!(cache.len(), 1);
    assert_eq!(
        ask(&cache, "permitted", pb::Decision::Permit).await,
        Source::Hit
    );
    tokio::time::advance(Duration::from_secs(300)).await;
    assert_eq!(cache.sweep(), 1);
    assert_eq!((cache.len(), cache.bytes()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_key_stored_again_and_again_under_a_stale_window_stays_within_the_bytes() {
    let cache = DecisionCache::new(
        CacheLimits {
            stale_window: Duration::from_secs(600),
            ..limits(1000, 8 * 1024)
        },
        CacheMetrics::default(),
    );
    cache.set_revision("r1");
    for _ in 0..500 {
        ask(&cache, "again", pb::Decision::Deny).await;
        assert!(cache.bytes() <= 8 * 1024, "{} bytes", cache.bytes());
        tokio::time::advance(Duration::from_secs(6)).await;
    }
    assert_eq!(cache.len(), 1);
    cache.set_revision("r2");
    assert_eq!((cache.len(), cache.bytes()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn storing_a_key_again_counts_its_bytes_once() {
    let cache = DecisionCache::new(limits(1000, 1 << 20), CacheMetrics::default());
    cache.set_revision("r1");
    ask(&cache, "a", pb::Decision::Deny).await;
    let once = cache.bytes();
    tokio::time::advance(Duration::from_secs(6)).await;
    ask(&cache, "a", pb::Decision::Deny).await;
    assert_eq!(cache.bytes(), once);
    tokio::time::advance(Duration::from_secs(6)).await;
    cache.sweep();
    assert_eq!((cache.len(), cache.bytes()), (0, 0));
}
