//! Work whose cost grows with the request — batches, the reverse question,
//! action searches — runs here, on a few threads of the blocking pool,
//! never on the async workers that answer `Check`: one caller's batches
//! cannot make every `Check` wait.
//!
//! At most `slots` jobs run at once (the machine's cores but one, at least
//! one). A job that finds no free slot waits in its peer address's queue,
//! and a slot that comes free goes to the address whose next job would
//! finish first in fair time (each address is charged the time its jobs
//! ran, an estimate when they start and the truth when they end; its next
//! job is estimated at its last one's cost, or, for an address not seen,
//! at the pool's time per request byte), not to the next job: an address
//! that queued forty heavy batches gets as much time as one that asks for
//! a light one, which therefore runs at the next free slot. An address
//! that goes idle keeps its debt (up to [`IDLE_PEERS`] addresses are
//! remembered) but no credit: it comes back level with the last served at
//! best. An address queues at most `per_peer` jobs (the next is refused
//! at once); all addresses together `places`, and when those are full a
//! job from an address with fewer waiting takes the place of the newest
//! job of the longest queue, or of the job that would run last. A job waits
//! at most [`WorkPool::WAIT`]. A job refused is the caller's to retry:
//! `503`/`RESOURCE_EXHAUSTED`, saying why.

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

/// Idle addresses whose debt is remembered; past it the least indebted
/// are forgotten.
const IDLE_PEERS: usize = 4096;

/// A job waiting for a slot: told through `slot` when it has one (and
/// what it was charged in advance).
#[derive(Debug)]
struct Waiter {
    id: u64,
    /// The job's request in bytes.
    size: usize,
    slot: oneshot::Sender<u64>,
}

/// An address with jobs waiting or running.
#[derive(Debug, Default)]
struct Peer {
    waiting: VecDeque<Waiter>,
    running: usize,
    /// The time its jobs have run, or are estimated to, in µs.
    served: u64,
    /// What its last job cost (µs; 0: none yet).
    last_cost: u64,
}

/// What an idle address owes: its `served` past the level and last cost.
#[derive(Debug, Clone, Copy)]
struct Debt {
    served: u64,
    last_cost: u64,
}

#[derive(Debug, Default)]
struct Queues {
    free: usize,
    /// Addresses with jobs waiting or running.
    peers: HashMap<IpAddr, Peer>,
    /// Idle addresses served past the level.
    idle: HashMap<IpAddr, Debt>,
    /// The `served` of the address served last: where an address not
    /// seen (or owing nothing) starts.
    level: u64,
    /// Nanoseconds a request byte has cost, on average (0: none measured).
    ns_per_byte: u64,
    queued: usize,
    next_id: u64,
}

#[derive(Debug)]
struct Inner {
    queues: Mutex<Queues>,
    places: usize,
    per_peer: usize,
}

/// A slot held by `peer` since `since` for a job of `size` bytes, charged
/// `charged` µs in advance: its time is charged to `peer`, and the slot
/// handed on when dropped (also when the job panics).
struct Slot {
    inner: Arc<Inner>,
    peer: IpAddr,
    size: usize,
    charged: u64,
    since: Instant,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let cost = u64::try_from(self.since.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.inner
            .done(self.peer, self.charged, Some((cost, self.size)));
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

    /// Runs `job`, asked by a request of `size` bytes, on the blocking
    /// pool for `peer`, or says why not.
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
                let charged = q.start(peer, size);
                return Ok(self.inner.slot(peer, size, charged));
            }
            let own = q.peers.get(&peer).map_or(0, |p| p.waiting.len());
            if own >= self.inner.per_peer {
                return Err(Busy::Peer);
            }
            if q.queued >= self.inner.places && !q.displace_for(peer, own, size) {
                return Err(Busy::Everyone);
            }
            let (slot, told) = oneshot::channel();
            let id = q.next_id;
            q.next_id += 1;
            q.queued += 1;
            q.enter(peer).waiting.push_back(Waiter { id, size, slot });
            Ticket {
                inner: self.inner.clone(),
                peer,
                id,
                told,
            }
        };
        let deadline = tokio::time::Instant::now() + self.wait;
        match tokio::time::timeout_at(deadline, &mut ticket.told).await {
            Ok(Ok(charged)) => {
                ticket.id = u64::MAX;
                Ok(self.inner.slot(peer, size, charged))
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
    told: oneshot::Receiver<u64>,
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
        // unused, its charge returned.
        if let (false, Ok(charged)) = (withdrawn, self.told.try_recv()) {
            self.inner.done(self.peer, charged, None);
        }
    }
}

impl Inner {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Queues>, Busy> {
        self.queues.lock().map_err(|_| Busy::Lost)
    }

    fn slot(self: &Arc<Self>, peer: IpAddr, size: usize, charged: u64) -> Slot {
        Slot {
            inner: self.clone(),
            peer,
            size,
            charged,
            since: Instant::now(),
        }
    }

    /// A job of `peer` charged `charged` in advance ended, having run
    /// (`cost` µs for `size` bytes) or not: the charge made true, and the
    /// slot given to the job that would finish first, or kept free.
    fn done(&self, peer: IpAddr, charged: u64, ran: Option<(u64, usize)>) {
        let Ok(mut q) = self.queues.lock() else {
            return;
        };
        if let Some((cost, size)) = ran {
            let rate = cost.saturating_mul(1000) / (size.max(1) as u64);
            q.ns_per_byte = if q.ns_per_byte == 0 {
                rate
            } else {
                (q.ns_per_byte.saturating_mul(7) / 8).saturating_add(rate / 8)
            };
        }
        if let Some(p) = q.peers.get_mut(&peer) {
            let cost = ran.map_or(0, |(cost, _)| cost);
            p.served = p.served.saturating_sub(charged).saturating_add(cost);
            if ran.is_some() {
                p.last_cost = cost.max(1);
            }
            p.running = p.running.saturating_sub(1);
            q.leave_if_idle(peer);
        }
        loop {
            let rate = q.ns_per_byte;
            let next = q
                .peers
                .iter()
                .filter_map(|(&ip, p)| {
                    let w = p.waiting.front()?;
                    Some((
                        (p.served.saturating_add(estimate(p, w.size, rate)), w.id),
                        ip,
                    ))
                })
                .min()
                .map(|(_, ip)| ip);
            let Some(next) = next else { break };
            let Some(waiter) = q.peers.get_mut(&next).and_then(|p| p.waiting.pop_front()) else {
                break;
            };
            q.queued -= 1;
            let charged = q.start(next, waiter.size);
            // A waiter that gave up has dropped its receiver: its charge
            // back, and the next.
            if waiter.slot.send(charged).is_ok() {
                return;
            }
            if let Some(p) = q.peers.get_mut(&next) {
                p.served = p.served.saturating_sub(charged);
                p.running = p.running.saturating_sub(1);
            }
            q.leave_if_idle(next);
        }
        q.free += 1;
    }
}

/// The µs a job of `size` bytes from `p` is expected to take: its last
/// job's cost, or the pool's rate per byte for an address not yet
/// measured.
fn estimate(p: &Peer, size: usize, ns_per_byte: u64) -> u64 {
    if p.last_cost > 0 {
        p.last_cost
    } else {
        (size as u64).saturating_mul(ns_per_byte) / 1000
    }
}

impl Queues {
    /// `peer`'s entry: as it is, or back from idle with its debt (at the
    /// level at least), or new at the level.
    fn enter(&mut self, peer: IpAddr) -> &mut Peer {
        let level = self.level;
        let debt = self.idle.remove(&peer);
        self.peers.entry(peer).or_insert_with(|| Peer {
            served: debt.map_or(level, |d| d.served.max(level)),
            last_cost: debt.map_or(0, |d| d.last_cost),
            ..Peer::default()
        })
    }

    /// `peer` starts a job of `size` bytes: charged its estimate in
    /// advance (so its jobs do not take every slot before the first is
    /// charged); what it was charged.
    fn start(&mut self, peer: IpAddr, size: usize) -> u64 {
        let rate = self.ns_per_byte;
        let p = self.enter(peer);
        p.running += 1;
        let served = p.served;
        let charged = estimate(p, size, rate);
        p.served = p.served.saturating_add(charged);
        self.level = self.level.max(served);
        charged
    }

    /// Forgets `peer` once it has nothing waiting or running, remembering
    /// what it owes past the level.
    fn leave_if_idle(&mut self, peer: IpAddr) {
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        if p.running > 0 || !p.waiting.is_empty() {
            return;
        }
        let debt = Debt {
            served: p.served,
            last_cost: p.last_cost,
        };
        self.peers.remove(&peer);
        if debt.served <= self.level {
            return;
        }
        if self.idle.len() >= IDLE_PEERS {
            let level = self.level;
            self.idle.retain(|_, d| d.served > level);
            if self.idle.len() >= IDLE_PEERS {
                let least = self
                    .idle
                    .iter()
                    .min_by_key(|(_, d)| d.served)
                    .map(|(&ip, _)| ip);
                if let Some(least) = least {
                    self.idle.remove(&least);
                }
            }
        }
        self.idle.insert(peer, debt);
    }

    /// Every place taken: refuses the newest job of the longest queue if
    /// it is longer than `own` + 1, or else the job that would run last,
    /// if it would run after `peer`'s job of `size` bytes (an address with
    /// fewer waiting, or whose job comes sooner in fair time, gets in);
    /// whether it did.
    fn displace_for(&mut self, peer: IpAddr, own: usize, size: usize) -> bool {
        let rate = self.ns_per_byte;
        let level = self.level;
        let mine = match self.peers.get(&peer) {
            Some(p) => p.served.saturating_add(estimate(p, size, rate)),
            None => {
                let debt = self.idle.get(&peer).copied();
                let p = Peer {
                    served: debt.map_or(level, |d| d.served.max(level)),
                    last_cost: debt.map_or(0, |d| d.last_cost),
                    ..Peer::default()
                };
                p.served.saturating_add(estimate(&p, size, rate))
            }
        };
        let longest = self
            .peers
            .iter()
            .filter(|(_, p)| p.waiting.len() > own + 1)
            .max_by_key(|(_, p)| p.waiting.len())
            .map(|(&ip, _)| ip);
        // A queue's newest job runs after all the queue's others.
        let last = |p: &Peer| {
            let back = p.waiting.back().map_or(0, |w| estimate(p, w.size, rate));
            p.served
                .saturating_add(back.saturating_mul(p.waiting.len() as u64))
        };
        let victim = longest.or_else(|| {
            self.peers
                .iter()
                .filter(|(ip, p)| **ip != peer && !p.waiting.is_empty() && last(p) > mine)
                .max_by_key(|(_, p)| last(p))
                .map(|(&ip, _)| ip)
        });
        // Dropping its sender tells the waiter `Everyone`.
        let Some(victim) = victim else {
            return false;
        };
        if self
            .peers
            .get_mut(&victim)
            .and_then(|p| p.waiting.pop_back())
            .is_none()
        {
            return false;
        }
        self.queued -= 1;
        self.leave_if_idle(victim);
        true
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
        self.leave_if_idle(peer);
        true
    }
}

#[cfg(test)]
mod tests;
