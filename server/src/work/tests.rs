//! The work pool: turns by address, places bounded, no slot lost.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::sync::mpsc;

use super::*;

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// A job that runs until released, then says `tag` went.
fn held(
    pool: &WorkPool,
    peer: IpAddr,
    tag: &'static str,
    gate: &Arc<Mutex<mpsc::Receiver<()>>>,
    ran: &Arc<Mutex<Vec<&'static str>>>,
) -> tokio::task::JoinHandle<Result<(), Busy>> {
    let (pool, gate, ran) = (pool.clone(), gate.clone(), ran.clone());
    tokio::spawn(async move {
        pool.run(peer, 1, move || {
            ran.lock().unwrap().push(tag);
            let _ = gate.lock().map(|g| g.recv_timeout(Duration::from_secs(5)));
        })
        .await
    })
}

/// Yields until `n` jobs have started.
async fn started(ran: &Arc<Mutex<Vec<&'static str>>>, n: usize) {
    for _ in 0..1000 {
        if ran.lock().unwrap().len() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("{n} jobs never started");
}

/// Yields until `n` jobs wait in the pool's queues.
async fn queued(pool: &WorkPool, n: usize) {
    for _ in 0..1000 {
        if pool.inner.queues.lock().unwrap().queued == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("{n} jobs never queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freed_slot_goes_to_the_least_served_address_not_the_next_job() {
    let pool = WorkPool::new(1, 64, 8);
    let (release, gate) = mpsc::channel::<()>();
    let gate = Arc::new(Mutex::new(gate));
    let ran = Arc::new(Mutex::new(Vec::new()));
    let mut jobs = vec![held(&pool, ip(1), "a0", &gate, &ran)];
    started(&ran, 1).await;
    for (n, tag) in ["a1", "a2", "a3", "a4"].into_iter().enumerate() {
        jobs.push(held(&pool, ip(1), tag, &gate, &ran));
        queued(&pool, n + 1).await;
    }
    // The real caller comes last, behind four of the flood's.
    jobs.push(held(&pool, ip(2), "b", &gate, &ran));
    queued(&pool, 5).await;
    for _ in 0..6 {
        release.send(()).unwrap();
    }
    for job in jobs {
        assert_eq!(job.await.unwrap(), Ok(()));
    }
    // It ran first of those waiting: the flood had been served, it had
    // not.
    assert_eq!(*ran.lock().unwrap(), ["a0", "b", "a1", "a2", "a3", "a4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_past_its_share_is_refused_at_once() {
    let pool = WorkPool::new(1, 64, 2);
    let (release, gate) = mpsc::channel::<()>();
    let gate = Arc::new(Mutex::new(gate));
    let ran = Arc::new(Mutex::new(Vec::new()));
    let mut jobs = vec![held(&pool, ip(1), "a0", &gate, &ran)];
    started(&ran, 1).await;
    for n in 1..=2 {
        jobs.push(held(&pool, ip(1), "a", &gate, &ran));
        queued(&pool, n).await;
    }
    let started = std::time::Instant::now();
    assert_eq!(pool.run(ip(1), 1, || ()).await, Err(Busy::Peer));
    assert!(started.elapsed() < WorkPool::WAIT / 2);
    for _ in 0..3 {
        release.send(()).unwrap();
    }
    for job in jobs {
        assert_eq!(job.await.unwrap(), Ok(()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_place_is_taken_the_longest_queue_gives_one_up() {
    let pool = WorkPool::new(1, 4, 4);
    let (release, gate) = mpsc::channel::<()>();
    let gate = Arc::new(Mutex::new(gate));
    let ran = Arc::new(Mutex::new(Vec::new()));
    let running = held(&pool, ip(1), "a0", &gate, &ran);
    started(&ran, 1).await;
    let mut flood = Vec::new();
    for n in 1..=4 {
        flood.push(held(&pool, ip(1), "a", &gate, &ran));
        queued(&pool, n).await;
    }
    // Every place taken by one address: another still gets in, and the
    // flood's newest is refused.
    let real = held(&pool, ip(2), "b", &gate, &ran);
    let newest = flood.pop().unwrap();
    assert_eq!(newest.await.unwrap(), Err(Busy::Everyone));
    for _ in 0..5 {
        release.send(()).unwrap();
    }
    assert_eq!(running.await.unwrap(), Ok(()));
    assert_eq!(real.await.unwrap(), Ok(()));
    for job in flood {
        assert_eq!(job.await.unwrap(), Ok(()));
    }
    // Places held evenly: one address each cannot displace the other.
    assert_eq!(pool.inner.queues.lock().unwrap().queued, 0);
}

#[tokio::test(start_paused = true)]
async fn a_job_waits_no_longer_than_its_time_and_no_slot_is_lost() {
    let pool = WorkPool::new(1, 8, 8);
    let held = pool.slot(ip(1), 1).await.unwrap();
    let started = tokio::time::Instant::now();
    assert_eq!(pool.run(ip(2), 1, || ()).await, Err(Busy::Waited));
    assert_eq!(started.elapsed(), WorkPool::WAIT);
    // A caller that goes away while waiting leaves the queue.
    let gone = tokio::time::timeout(Duration::from_millis(10), pool.slot(ip(3), 1)).await;
    assert!(gone.is_err());
    assert_eq!(pool.inner.queues.lock().unwrap().queued, 0);
    // A slot handed to a caller who has gone is handed on, not lost.
    let waiting = tokio::spawn({
        let pool = pool.clone();
        async move { pool.slot(ip(4), 1).await.map(|_| ()) }
    });
    tokio::task::yield_now().await;
    drop(held);
    assert_eq!(waiting.await.unwrap(), Ok(()));
    assert_eq!(pool.run(ip(5), 1, || 7).await, Ok(7));
    assert_eq!(pool.inner.queues.lock().unwrap().free, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_panics_gives_its_slot_back() {
    let pool = WorkPool::new(1, 8, 8);
    let lost = pool
        .run(ip(1), 1, || -> u8 {
            std::panic::panic_any("a job gone wrong")
        })
        .await;
    assert_eq!(lost, Err(Busy::Lost));
    assert_eq!(pool.run(ip(1), 1, || 7).await, Ok(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_host_is_one_address_whichever_of_its_64_it_uses() {
    let pool = WorkPool::new(1, 64, 1);
    let (release, gate) = mpsc::channel::<()>();
    let gate = Arc::new(Mutex::new(gate));
    let ran = Arc::new(Mutex::new(Vec::new()));
    let host = |last: u16| IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, last]);
    let running = held(&pool, host(1), "first", &gate, &ran);
    started(&ran, 1).await;
    let waiting = held(&pool, host(2), "second", &gate, &ran);
    queued(&pool, 1).await;
    assert_eq!(pool.run(host(3), 1, || ()).await, Err(Busy::Peer));
    for _ in 0..2 {
        release.send(()).unwrap();
    }
    assert_eq!(running.await.unwrap(), Ok(()));
    assert_eq!(waiting.await.unwrap(), Ok(()));
}

/// Runs one job of `peer` that takes `ms` of wall time.
async fn ran_for(pool: &WorkPool, peer: IpAddr, ms: u64) {
    let job = move || std::thread::sleep(Duration::from_millis(ms));
    assert_eq!(pool.run(peer, 100, job).await, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_that_goes_idle_keeps_its_debt() {
    let pool = WorkPool::new(1, 64, 8);
    // 127.0.0.1 is served 30 ms, then has nothing waiting or running.
    ran_for(&pool, ip(1), 30).await;
    let (release, gate) = mpsc::channel::<()>();
    let gate = Arc::new(Mutex::new(gate));
    let ran = Arc::new(Mutex::new(Vec::new()));
    let holder = held(&pool, ip(3), "holder", &gate, &ran);
    started(&ran, 1).await;
    // It comes back first, a new address after it: the new one goes
    // first all the same.
    let back = held(&pool, ip(1), "back", &gate, &ran);
    queued(&pool, 1).await;
    let new = held(&pool, ip(2), "new", &gate, &ran);
    queued(&pool, 2).await;
    for _ in 0..3 {
        release.send(()).unwrap();
    }
    for job in [holder, back, new] {
        assert_eq!(job.await.unwrap(), Ok(()));
    }
    assert_eq!(*ran.lock().unwrap(), ["holder", "new", "back"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_place_is_taken_the_job_that_would_run_last_gives_its_place_up() {
    let pool = WorkPool::new(1, 2, 4);
    ran_for(&pool, ip(1), 30).await;
    let (release, gate) = mpsc::channel::<()>();
    let gate = Arc::new(Mutex::new(gate));
    let ran = Arc::new(Mutex::new(Vec::new()));
    let holder = held(&pool, ip(3), "holder", &gate, &ran);
    started(&ran, 1).await;
    let indebted = held(&pool, ip(1), "indebted", &gate, &ran);
    queued(&pool, 1).await;
    let other = held(&pool, ip(4), "other", &gate, &ran);
    queued(&pool, 2).await;
    // Both places taken, one job each: the newcomer takes the place of
    // the address served most.
    let newcomer = held(&pool, ip(5), "newcomer", &gate, &ran);
    assert_eq!(indebted.await.unwrap(), Err(Busy::Everyone));
    for _ in 0..3 {
        release.send(()).unwrap();
    }
    for job in [holder, other, newcomer] {
        assert_eq!(job.await.unwrap(), Ok(()));
    }
}
