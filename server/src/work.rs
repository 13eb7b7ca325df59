//! Work whose cost grows with the request — batches, the reverse question,
//! action searches — runs here, on a few threads of the blocking pool,
//! never on the async workers that answer `Check`: one caller's batches
//! cannot make every `Check` wait.
//!
//! At most `slots` jobs run at once (the machine's cores but one, at least
//! one). A job that finds no free slot waits in its peer address's queue,
//! and a slot that comes free goes to the address that has been served
//! least (start-time fair queueing: each address is charged the time its
//! jobs ran; one that comes back after being idle starts level with the
//! last served, with no credit banked), not to the next job: an address
//! that queued forty heavy batches gets as much time as one that asks for
//! a light one, which therefore runs at the next free slot (among
//! addresses served alike, as all are at first, the smaller job goes
//! first). An address
//! queues at most `per_peer` jobs (the next is refused at once); all
//! addresses together `places`, and when those are full a job from an
//! address with fewer waiting takes the place of the newest job of the
//! longest queue. A job waits at most [`WorkPool::WAIT`]. A job refused
//! is the caller's to retry: `503`/`RESOURCE_EXHAUSTED`, saying why.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Why a job did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// The caller's address has its share of jobs waiting.
    Peer,
    /// Every place is taken (or the job's place was given to an address
    /// with fewer waiting).
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

/// A job waiting for a slot: told through `slot` when it has one.
#[derive(Debug)]
struct Waiter {
    id: u64,
    /// The job's size as its request says (bytes, items): among addresses
    /// served alike, the smaller job first.
    size: usize,
    slot: oneshot::Sender<()>,
}

/// An address with jobs waiting or running.
#[derive(Debug, Default)]
struct Peer {
    waiting: VecDeque<Waiter>,
    running: usize,
    /// The time its jobs have run (and are estimated to run), in µs: the
    /// least served goes next.
    served: u64,
    /// What its last job cost, charged in advance for the next.
    last_cost: u64,
}

#[derive(Debug, Default)]
struct Queues {
    free: usize,
    /// Addresses with jobs waiting or running; one with neither is
    /// forgotten (it comes back level with `level`).
    peers: HashMap<IpAddr, Peer>,
    /// The `served` of the address served last.
    level: u64,
    queued: usize,
    next_id: u64,
}

#[derive(Debug)]
struct Inner {
    queues: Mutex<Queues>,
    places: usize,
    per_peer: usize,
}

/// A slot held by `peer` since `since`: its time is charged to `peer`, and
/// the slot given to the least-served address when dropped (also when the
/// job panics).
struct Slot {
    inner: Arc<Inner>,
    peer: IpAddr,
    since: Instant,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let cost = u64::try_from(self.since.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.inner.done(self.peer, cost);
    }
}

/// The bounded pool of work off the async workers.
#[derive(Debug, Clone)]
pub struct WorkPool {
    inner: Arc<Inner>,
    /// How long a job waits for a slot.
    wait: Duration,
}

impl WorkPool {
    /// How long a job waits for a slot, by default.
    pub const WAIT: Duration = Duration::from_secs(2);

    /// `slots` jobs at once; `places` jobs waiting, `per_peer` of them
    /// for one address.
    pub fn new(slots: usize, places: usize, per_peer: usize) -> Self {
        WorkPool {
            inner: Arc::new(Inner {
                queues: Mutex::new(Queues {
                    free: slots.max(1),
                    ..Queues::default()
                }),
                places: places.max(1),
                per_peer: per_peer.max(1),
            }),
            wait: Self::WAIT,
        }
    }

    /// The machine's cores but one (at least one) at once; 64 waiting, 16
    /// for one address (a service's clients behind one address wait their
    /// turns; fairness between addresses is the turns', not the cap's).
    pub fn for_this_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self::new(cores.saturating_sub(1), 64, 16)
    }

    /// Runs `job` of `size` (its request's bytes, or items) on the
    /// blocking pool for `peer`, or says why not.
    pub async fn run<T: Send + 'static>(
        &self,
        peer: IpAddr,
        size: usize,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        // One host is one peer, whichever address of its IPv6 /64 it uses.
        let peer = purposegate_runtime::shares::peer_of(peer);
        let slot = self.slot(peer, size).await?;
        tokio::task::spawn_blocking(move || {
            let _held = slot;
            job()
        })
        .await
        .map_err(|_| Busy::Lost)
    }

    /// A free slot, or one waited for in `peer`'s queue.
    async fn slot(&self, peer: IpAddr, size: usize) -> Result<Slot, Busy> {
        let mut ticket = {
            let mut q = self.inner.lock()?;
            if q.free > 0 {
                q.free -= 1;
                q.start(peer);
                return Ok(self.inner.slot(peer));
            }
            let own = q.peers.get(&peer).map_or(0, |p| p.waiting.len());
            if own >= self.inner.per_peer {
                return Err(Busy::Peer);
            }
            if q.queued >= self.inner.places && !q.displace_for(own) {
                return Err(Busy::Everyone);
            }
            let (slot, told) = oneshot::channel();
            let id = q.next_id;
            q.next_id += 1;
            q.queued += 1;
            let level = q.level;
            q.peers
                .entry(peer)
                .or_insert_with(|| Peer {
                    served: level,
                    ..Peer::default()
                })
                .waiting
                .push_back(Waiter { id, size, slot });
            Ticket {
                inner: self.inner.clone(),
                peer,
                id,
                told,
            }
        };
        let deadline = tokio::time::Instant::now() + self.wait;
        match tokio::time::timeout_at(deadline, &mut ticket.told).await {
            Ok(Ok(())) => {
                ticket.id = u64::MAX;
                Ok(self.inner.slot(peer))
            }
            // Its place went to an address with fewer waiting.
            Ok(Err(_)) => Err(Busy::Everyone),
            // Out of time: the ticket, dropped, leaves the queue (or hands
            // on a slot that came just then).
            Err(_) => Err(Busy::Waited),
        }
    }
}

/// A job's place in its address's queue. Dropped before it was given a
/// slot (out of time, or the caller gone), it leaves the queue; given one
/// that was never taken, it hands the slot on: no slot is ever lost.
struct Ticket {
    inner: Arc<Inner>,
    peer: IpAddr,
    /// `u64::MAX` once the slot is taken.
    id: u64,
    told: oneshot::Receiver<()>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.id == u64::MAX {
            return;
        }
        let withdrawn = match self.inner.queues.lock() {
            Ok(mut q) => q.withdraw(self.peer, self.id),
            Err(_) => return,
        };
        // Handed under the lock, so a slot sent is here now: given back
        // unused.
        if !withdrawn && self.told.try_recv().is_ok() {
            self.inner.done(self.peer, 0);
        }
    }
}

impl Inner {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Queues>, Busy> {
        self.queues.lock().map_err(|_| Busy::Lost)
    }

    fn slot(self: &Arc<Self>, peer: IpAddr) -> Slot {
        Slot {
            inner: self.clone(),
            peer,
            since: Instant::now(),
        }
    }

    /// `peer`'s job ended after `cost` µs: charged, and its slot given to
    /// the least-served address waiting, or kept free.
    fn done(&self, peer: IpAddr, cost: u64) {
        let Ok(mut q) = self.queues.lock() else {
            return;
        };
        if let Some(p) = q.peers.get_mut(&peer) {
            // Its estimate (the last cost) was charged when it started.
            p.served = p.served.saturating_sub(p.last_cost).saturating_add(cost);
            p.last_cost = cost;
            p.running = p.running.saturating_sub(1);
            if p.running == 0 && p.waiting.is_empty() {
                q.peers.remove(&peer);
            }
        }
        loop {
            // The least served; among those served alike (every address at
            // first), the smaller job, then the one that came first.
            let next = q
                .peers
                .iter()
                .filter_map(|(&ip, p)| p.waiting.front().map(|w| ((p.served, w.size, w.id), ip)))
                .min()
                .map(|(_, ip)| ip);
            let Some(next) = next else { break };
            let Some(waiter) = q.peers.get_mut(&next).and_then(|p| p.waiting.pop_front()) else {
                break;
            };
            q.queued -= 1;
            // A waiter that gave up has dropped its receiver: the next.
            if waiter.slot.send(()).is_ok() {
                q.start(next);
                return;
            }
            if q.peers
                .get(&next)
                .is_some_and(|p| p.running == 0 && p.waiting.is_empty())
            {
                q.peers.remove(&next);
            }
        }
        q.free += 1;
    }
}

impl Queues {
    /// `peer` starts a job: charged its last job's cost in advance, so
    /// its jobs do not take every slot before the first is charged.
    fn start(&mut self, peer: IpAddr) {
        let level = self.level;
        let p = self.peers.entry(peer).or_insert_with(|| Peer {
            served: level,
            ..Peer::default()
        });
        p.running += 1;
        self.level = self.level.max(p.served);
        p.served = p.served.saturating_add(p.last_cost);
    }

    /// Every place taken: refuses the newest job of the longest queue if
    /// it is longer than `own` + 1 (an address with fewer waiting gets
    /// in); whether it did.
    fn displace_for(&mut self, own: usize) -> bool {
        let longest = self
            .peers
            .values_mut()
            .filter(|p| p.waiting.len() > own + 1)
            .max_by_key(|p| p.waiting.len());
        // Dropping its sender tells the waiter `Everyone`.
        match longest.and_then(|p| p.waiting.pop_back()) {
            Some(_) => {
                self.queued -= 1;
                true
            }
            None => false,
        }
    }

    /// Takes job `id` out of `peer`'s queue; whether it was there.
    fn withdraw(&mut self, peer: IpAddr, id: u64) -> bool {
        let Some(p) = self.peers.get_mut(&peer) else {
            return false;
        };
        let Some(at) = p.waiting.iter().position(|w| w.id == id) else {
            return false;
        };
        p.waiting.remove(at);
        self.queued -= 1;
        if p.running == 0 && p.waiting.is_empty() {
            self.peers.remove(&peer);
        }
        true
    }
}

#[cfg(test)]
mod tests;
