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

/// A decision point for unit tests: answers `answer` after `delay` (or
/// fails with `UNAVAILABLE` while `down`), and counts the questions.
#[derive(Debug, Clone)]
struct FakePdp {
    asked: Arc<AtomicUsize>,
    delay: Duration,
    down: Arc<std::sync::atomic::AtomicBool>,
    answer: pb::CheckResponse,
}

impl FakePdp {
    fn new(answer: pb::CheckResponse, delay: Duration) -> Self {
        FakePdp {
            asked: Arc::new(AtomicUsize::new(0)),
            delay,
            down: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            answer,
        }
    }

    fn asked(&self) -> usize {
        self.asked.load(Ordering::SeqCst)
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// The `ask` a caller of the cache hands it.
    fn ask(
        &self,
    ) -> impl FnOnce() -> std::pin::Pin<
        Box<dyn Future<Output = Result<pb::CheckResponse, tonic::Status>> + Send>,
    > + use<> {
        let pdp = self.clone();
        move || {
            Box::pin(async move {
                pdp.asked.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(pdp.delay).await;
                if pdp.down.load(Ordering::SeqCst) {
                    Err(tonic::Status::unavailable("the PDP is down"))
                } else {
                    Ok(pdp.answer.clone())
                }
            })
        }
    }
}

async fn source(cache: &DecisionCache, pdp: &FakePdp, subject: &str) -> Option<Source> {
    cache
        .get_or_ask(&request(subject), pdp.ask())
        .await
        .ok()
        .map(|(_, source)| source)
}

#[tokio::test(start_paused = true)]
async fn an_answer_is_served_for_its_ttl_and_asked_again_after() {
    let cache = DecisionCache::new(limits(100, 1 << 20), CacheMetrics::default());
    cache.set_revision("r1");
    let pdp = FakePdp::new(answer(pb::Decision::Permit, 30), Duration::from_millis(5));
    assert_eq!(source(&cache, &pdp, "s").await, Some(Source::Miss));
    tokio::time::advance(Duration::from_secs(29)).await;
    assert_eq!(source(&cache, &pdp, "s").await, Some(Source::Hit));
    assert_eq!(pdp.asked(), 1);
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(source(&cache, &pdp, "s").await, Some(Source::Miss));
    assert_eq!(pdp.asked(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_denial_is_kept_no_longer_than_the_deny_ttl() {
    let cache = DecisionCache::new(limits(100, 1 << 20), CacheMetrics::default());
    cache.set_revision("r1");
    let pdp = FakePdp::new(answer(pb::Decision::Deny, 300), Duration::ZERO);
    assert_eq!(source(&cache, &pdp, "s").await, Some(Source::Miss));
    tokio::time::advance(Duration::from_secs(4)).await;
    assert_eq!(source(&cache, &pdp, "s").await, Some(Source::Hit));
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(source(&cache, &pdp, "s").await, Some(Source::Miss));
}

#[tokio::test(start_paused = true)]
async fn an_expired_answer_serves_only_while_the_pdp_is_down_and_only_in_the_window() {
    let cache = DecisionCache::new(
        CacheLimits {
            stale_window: Duration::from_secs(60),
            ..limits(100, 1 << 20)
        },
        CacheMetrics::default(),
    );
    cache.set_revision("r1");
    let pdp = FakePdp::new(answer(pb::Decision::Permit, 10), Duration::ZERO);
    assert_eq!(source(&cache, &pdp, "s").await, Some(Source::Miss));
    // Expired, the PDP up: asked again, never served stale.
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(source(&cache, &pdp, "s").await, Some(Source::Miss));
    // Expired, the PDP down: served stale inside the window...
    pdp.set_down(true);
    tokio::time::advance(Duration::from_secs(11 + 50)).await;
    assert_eq!(source(&cache, &pdp, "s").await, Some(Source::Stale));
    // ...and nothing past it.
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(source(&cache, &pdp, "s").await, None);
    // A question never answered is not answered stale.
    assert_eq!(source(&cache, &pdp, "other").await, None);
}

#[tokio::test(start_paused = true)]
async fn concurrent_identical_misses_ask_once() {
    let cache = Arc::new(DecisionCache::new(
        limits(100, 1 << 20),
        CacheMetrics::default(),
    ));
    cache.set_revision("r1");
    let pdp = FakePdp::new(answer(pb::Decision::Permit, 30), Duration::from_millis(100));
    let callers: Vec<_> = (0..20)
        .map(|_| {
            let (cache, pdp) = (cache.clone(), pdp.clone());
            tokio::spawn(async move { source(&cache, &pdp, "s").await })
        })
        .collect();
    let mut sources = Vec::new();
    for caller in callers {
        sources.push(caller.await.unwrap());
    }
    assert_eq!(pdp.asked(), 1);
    assert!(
        sources.iter().all(|s| *s == Some(Source::Miss)),
        "{sources:?}"
    );
    // A different question is a flight of its own.
    assert_eq!(source(&cache, &pdp, "t").await, Some(Source::Miss));
    assert_eq!(pdp.asked(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_flight_leaves_the_next_caller_to_ask_afresh() {
    let cache = Arc::new(DecisionCache::new(
        limits(100, 1 << 20),
        CacheMetrics::default(),
    ));
    cache.set_revision("r1");
    let pdp = FakePdp::new(answer(pb::Decision::Permit, 30), Duration::from_secs(10));
    // The caller that runs the flight gives up (its call was cancelled).
    let gave_up = tokio::time::timeout(Duration::from_secs(1), source(&cache, &pdp, "s")).await;
    assert!(gave_up.is_err());
    assert_eq!(cache.in_flight.len(), 0, "the flight left the map");
    // The next caller asks, and is answered.
    let fast = FakePdp::new(answer(pb::Decision::Permit, 30), Duration::ZERO);
    assert_eq!(source(&cache, &fast, "s").await, Some(Source::Miss));
    assert_eq!(fast.asked(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_answer_landing_after_a_new_revision_is_never_served_for_it() {
    let cache = Arc::new(DecisionCache::new(
        limits(100, 1 << 20),
        CacheMetrics::default(),
    ));
    cache.set_revision("r1");
    let slow = FakePdp::new(answer(pb::Decision::Permit, 300), Duration::from_secs(1));
    let flight = {
        let (cache, slow) = (cache.clone(), slow.clone());
        tokio::spawn(async move { source(&cache, &slow, "s").await })
    };
    // The revision changes while the r1 answer is on its way.
    tokio::time::advance(Duration::from_millis(500)).await;
    assert!(cache.set_revision("r2"));
    assert_eq!(flight.await.unwrap(), Some(Source::Miss));
    // The r1 answer was used by its caller, and not kept.
    assert_eq!((cache.len(), cache.bytes()), (0, 0));
    // Under r2 the question is asked again, not answered from r1.
    let r2 = FakePdp::new(
        pb::CheckResponse {
            policy_revision: "r2".into(),
            ..answer(pb::Decision::Deny, 300)
        },
        Duration::ZERO,
    );
    let (got, from) = cache.get_or_ask(&request("s"), r2.ask()).await.unwrap();
    assert_eq!((got.decision(), from), (pb::Decision::Deny, Source::Miss));
    assert_eq!(r2.asked(), 1);
}

#[tokio::test(start_paused = true)]
async fn at_the_entry_bound_the_oldest_answer_goes_first() {
    let cache = DecisionCache::new(limits(3, 1 << 20), CacheMetrics::default());
    cache.set_revision("r1");
    let pdp = FakePdp::new(answer(pb::Decision::Permit, 300), Duration::ZERO);
    for subject in ["a", "b", "c", "d"] {
        assert_eq!(source(&cache, &pdp, subject).await, Some(Source::Miss));
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    assert_eq!(cache.len(), 3);
    for subject in ["b", "c", "d"] {
        assert_eq!(source(&cache, &pdp, subject).await, Some(Source::Hit));
    }
    assert_eq!(source(&cache, &pdp, "a").await, Some(Source::Miss));
}

#[tokio::test(start_paused = true)]
async fn answers_alike_are_kept_once_and_go_with_their_last_entry() {
    let cache = DecisionCache::new(limits(1000, 1 << 20), CacheMetrics::default());
    cache.set_revision("r1");
    let pdp = FakePdp::new(answer(pb::Decision::Permit, 30), Duration::ZERO);
    let mut kept = Vec::new();
    for i in 0..100 {
        let (got, _) = cache
            .get_or_ask(&request(&format!("s{i}")), pdp.ask())
            .await
            .unwrap();
        kept.push(got);
    }
    assert_eq!((cache.len(), cache.answers()), (100, 1));
    assert!(kept.iter().all(|a| Arc::ptr_eq(a, &kept[0])), "one copy");
    // A hit hands out the same copy.
    let (hit, source) = cache.get_or_ask(&request("s7"), pdp.ask()).await.unwrap();
    assert_eq!(source, Source::Hit);
    assert!(Arc::ptr_eq(&hit, &kept[0]));
    // Each entry costs its question, not the answer again.
    let one = cache.bytes() / 100;
    assert!(
        one < ENTRY_OVERHEAD + 64 + SLOT_BYTES + 40,
        "{one} bytes an entry"
    );
    // Another answer is another copy.
    let other = FakePdp::new(answer(pb::Decision::Deny, 30), Duration::ZERO);
    cache
        .get_or_ask(&request("denied"), other.ask())
        .await
        .unwrap();
    assert_eq!(cache.answers(), 2);
    // Once every entry has gone, so have the answers and every byte, even
    // those a caller still held when their last entry went.
    tokio::time::advance(Duration::from_secs(31)).await;
    cache.sweep();
    assert_eq!(cache.len(), 0);
    drop((kept, hit));
    cache.sweep();
    assert_eq!((cache.answers(), cache.bytes()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn questions_asked_in_another_order_of_attributes_are_one_entry() {
    let cache = DecisionCache::new(limits(1000, 1 << 20), CacheMetrics::default());
    cache.set_revision("r1");
    let pdp = FakePdp::new(answer(pb::Decision::Permit, 30), Duration::ZERO);
    let with = |pairs: &[(&str, &str)]| {
        let mut r = request("s");
        if let Some(resource) = r.resource.as_mut() {
            resource.attributes = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        }
        r
    };
    let asked = |r: pb::CheckRequest| {
        let (cache, pdp) = (&cache, &pdp);
        async move { cache.get_or_ask(&r, pdp.ask()).await.unwrap().1 }
    };
    let pairs: Vec<(String, String)> = (0..12)
        .map(|i| (format!("k{i}"), format!("v{i}")))
        .collect();
    let pairs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(asked(with(&pairs)).await, Source::Miss);
    let reversed: Vec<_> = pairs.iter().rev().copied().collect();
    assert_eq!(asked(with(&reversed)).await, Source::Hit);
    // A value moved across the boundary of key and value is another question.
    assert_eq!(asked(with(&[("a", "bc")])).await, Source::Miss);
    assert_eq!(asked(with(&[("ab", "c")])).await, Source::Miss);
    assert_eq!(pdp.asked(), 3);
}
