//! Work whose cost grows with the request — batches, the reverse question,
//! action searches — runs here, on a few threads of the blocking pool,
//! never on the async workers that answer `Check`: one caller's batches
//! cannot make every `Check` wait.
//!
//! At most `slots` jobs run at once (the machine's cores but one, at least
//! one). A job waits for its place and a slot at most [`WorkPool::WAIT`];
//! the jobs waiting or running are places shared by peers ([`Shares`]):
//! no peer address holds more than its share (the rest of its burst waits
//! for its own places), so a flood from one address leaves room for
//! everyone else. A job refused is the caller's to retry:
//! `503`/`RESOURCE_EXHAUSTED`, saying why.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use purposegate_runtime::shares::{Full, Shares};
use tokio::sync::Semaphore;

/// Why a job did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// The caller's address holds its share of places.
    Peer,
    /// Every place is taken.
    Everyone,
    /// No slot came free in time.
    Waited,
    /// The job ended without an answer (it panicked).
    Lost,
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Busy::Peer => "too many batches or searches from your address at once; try again",
            Busy::Everyone => "too many batches and searches at once; try again",
            Busy::Waited => "the server is busy with batches and searches; try again",
            Busy::Lost => "the work was lost; try again",
        })
    }
}

/// The bounded pool of work off the async workers.
#[derive(Debug, Clone)]
pub struct WorkPool {
    running: Arc<Semaphore>,
    places: Arc<Shares>,
    /// Jobs waiting for a place of their address's share: as many again
    /// as the share, then refused at once (each holds its request).
    waiting: Arc<Shares>,
    /// How long a job waits for its place and a slot, in all.
    wait: Duration,
}

impl WorkPool {
    /// How long a job waits for its place and a slot, in all, by default.
    pub const WAIT: Duration = Duration::from_secs(2);
    /// How often a job over its address's share looks for a place.
    const RETRY: Duration = Duration::from_millis(5);

    /// `slots` jobs at once; `places` jobs waiting or running, `per_peer`
    /// of them for one address.
    pub fn new(slots: usize, places: usize, per_peer: usize) -> Self {
        WorkPool {
            running: Arc::new(Semaphore::new(slots.max(1))),
            places: Shares::new(places, per_peer),
            waiting: Shares::new(places, per_peer),
            wait: Self::WAIT,
        }
    }

    /// The machine's cores but one (at least one) at once; 64 waiting or
    /// running, 4 for one address.
    pub fn for_this_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self::new(cores.saturating_sub(1), 64, 4)
    }

    /// Runs `job` on the blocking pool for `peer`, or says why not.
    pub async fn run<T: Send + 'static>(
        &self,
        peer: IpAddr,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let deadline = tokio::time::Instant::now() + self.wait;
        // A place of the caller's share, waited for (a burst from one
        // address queues behind itself, not in front of everyone else);
        // past as many waiting again, refused at once.
        let mut waiting = None;
        let place = loop {
            match self.places.take(peer) {
                Ok(place) => break place,
                Err(full) if tokio::time::Instant::now() >= deadline => {
                    return Err(match full {
                        Full::Peer => Busy::Peer,
                        Full::Everyone => Busy::Everyone,
                    });
                }
                Err(full) => {
                    if waiting.is_none() {
                        waiting = Some(self.waiting.take(peer).map_err(|_| match full {
                            Full::Peer => Busy::Peer,
                            Full::Everyone => Busy::Everyone,
                        })?);
                    }
                    tokio::time::sleep(Self::RETRY).await;
                }
            }
        };
        drop(waiting);
        let slot = tokio::time::timeout_at(deadline, self.running.clone().acquire_owned())
            .await
            .map_err(|_| Busy::Waited)?
            .map_err(|_| Busy::Lost)?;
        tokio::task::spawn_blocking(move || {
            let _held = (place, slot);
            job()
        })
        .await
        .map_err(|_| Busy::Lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_address_cannot_take_every_place() {
        let pool = WorkPool {
            wait: Duration::from_millis(300),
            ..WorkPool::new(2, 6, 2)
        };
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let wait = Arc::new(std::sync::Mutex::new(wait));
        let hold = |pool: &WorkPool, peer| {
            let pool = pool.clone();
            let wait = wait.clone();
            tokio::spawn(async move {
                pool.run(peer, move || {
                    let _ = wait.lock().map(|w| w.recv_timeout(Duration::from_secs(5)));
                })
                .await
            })
        };
        let held = [hold(&pool, ip(1)), hold(&pool, ip(1))];
        tokio::time::sleep(Duration::from_millis(100)).await;
        // A third from the same address waits for one of its own places,
        // then gives up.
        assert_eq!(pool.run(ip(1), || ()).await, Err(Busy::Peer));
        // Another address still gets in, once the slot frees.
        let other = tokio::spawn({
            let pool = pool.clone();
            async move { pool.run(ip(2), || 7).await }
        });
        for _ in 0..2 {
            release.send(()).unwrap();
        }
        assert_eq!(other.await.unwrap(), Ok(7));
        for h in held {
            assert_eq!(h.await.unwrap(), Ok(()));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_past_a_second_share_is_refused_at_once() {
        // An address's share is two places; two more of its jobs may wait
        // for them; the next is refused without waiting.
        let pool = WorkPool::new(2, 4, 2);
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let wait = Arc::new(std::sync::Mutex::new(wait));
        let mut jobs = Vec::new();
        for _ in 0..4 {
            let (pool, wait) = (pool.clone(), wait.clone());
            jobs.push(tokio::spawn(async move {
                pool.run(ip(1), move || {
                    let _ = wait.lock().map(|w| w.recv_timeout(Duration::from_secs(5)));
                })
                .await
            }));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let started = std::time::Instant::now();
        assert_eq!(pool.run(ip(1), || ()).await, Err(Busy::Peer));
        assert!(
            started.elapsed() < WorkPool::WAIT / 2,
            "{:?}",
            started.elapsed()
        );
        for _ in 0..4 {
            let _ = release.send(());
        }
        for job in jobs {
            assert_eq!(job.await.unwrap(), Ok(()));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_waits_for_a_slot_no_longer_than_its_time() {
        let pool = WorkPool::new(1, 8, 8);
        let _slot = pool.running.clone().acquire_owned().await.unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(pool.run(ip(1), || ()).await, Err(Busy::Waited));
        assert_eq!(started.elapsed(), WorkPool::WAIT);
    }
}
