//! A cap with a share per peer: a limited number of places of which no one
//! peer may hold more than its share, so one address cannot take them all
//! and lock every other caller out. Every listener counts its connections
//! with it, and the sidecar its calls in flight.
//!
//! A peer is an IPv4 address, or an IPv6 /64 (one host may pick its
//! source address from a whole /64; an IPv4-mapped address is its IPv4
//! one). A place is taken at once or refused at once ([`Shares::take`]);
//! it is given back when its [`Share`] is dropped.
//!
//! Places are counted with atomics: the total, and each peer's count in
//! its [`Account`]. Finding a peer's account is one short lock and a
//! lookup; a caller that takes places again and again (the sidecar, for
//! each call on a connection) keeps the account and takes from it with no
//! lock at all.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Places shared by peers: at most `total` at once, at most `per_peer` of
/// them for one peer address.
#[derive(Debug)]
pub struct Shares {
    total: usize,
    per_peer: usize,
    /// Places taken.
    all: AtomicUsize,
    /// Each peer's count, while anyone holds it (an account or a place).
    peers: Mutex<Peers>,
    /// Tasks waiting in [`Shares::emptied`].
    waiting: AtomicUsize,
    /// Woken each time the last place is given back.
    emptied: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Peers {
    by_peer: HashMap<IpAddr, Weak<PeerCount>>,
    /// Entries after the last sweep of the gone ones: the map is swept
    /// when it has doubled since (and holds at least 128), so it holds at
    /// most twice the peers alive at the last sweep, or 128.
    swept_at: usize,
}

/// The places one peer holds.
#[derive(Debug, Default)]
struct PeerCount {
    held: AtomicUsize,
}

/// Why no place was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// Every place is taken.
    Everyone,
    /// The peer holds its whole share.
    Peer,
}

/// One peer's account with [`Shares`]: places are taken from it without
/// a lock.
#[derive(Debug, Clone)]
pub struct Account {
    shares: Arc<Shares>,
    count: Arc<PeerCount>,
}

/// A place held by one peer, given back on drop.
#[derive(Debug)]
pub struct Share {
    shares: Arc<Shares>,
    count: Arc<PeerCount>,
    /// Places held (more than one for a share measured in bytes).
    places: usize,
}

impl Shares {
    /// `total` places, `per_peer` of them at most for one peer (each at
    /// least 1; a share larger than the total is the total).
    pub fn new(total: usize, per_peer: usize) -> Arc<Self> {
        let total = total.max(1);
        Arc::new(Shares {
            total,
            per_peer: per_peer.clamp(1, total),
            all: AtomicUsize::new(0),
            peers: Mutex::new(Peers::default()),
            waiting: AtomicUsize::new(0),
            emptied: tokio::sync::Notify::new(),
        })
    }

    pub fn total(&self) -> usize {
        self.total
    }

    pub fn per_peer(&self) -> usize {
        self.per_peer
    }

    /// `peer`'s account: the same for every address of the peer, for as
    /// long as anyone holds it.
    pub fn account(self: &Arc<Self>, peer: IpAddr) -> Account {
        let peer = peer_of(peer);
        let mut peers = match self.peers.lock() {
            Ok(peers) => peers,
            Err(poisoned) => poisoned.into_inner(),
        };
        let count = match peers.by_peer.get(&peer).and_then(Weak::upgrade) {
            Some(count) => count,
            None => {
                let count = Arc::new(PeerCount::default());
                peers.by_peer.insert(peer, Arc::downgrade(&count));
                if peers.by_peer.len() >= 2 * peers.swept_at.max(64) {
                    peers.by_peer.retain(|_, count| count.strong_count() > 0);
                    peers.swept_at = peers.by_peer.len();
                }
                count
            }
        };
        Account {
            shares: self.clone(),
            count,
        }
    }

    /// A place for `peer`, unless every place or the peer's share is taken.
    pub fn take(self: &Arc<Self>, peer: IpAddr) -> Result<Share, Full> {
        self.account(peer).take()
    }

    /// `n` places at once for `peer` (a budget of bytes, counted in
    /// places), unless they would pass the total or the peer's share.
    pub fn take_many(self: &Arc<Self>, peer: IpAddr, n: usize) -> Result<Share, Full> {
        self.account(peer).take_many(n)
    }

    /// Places taken now.
    pub fn taken(&self) -> usize {
        self.all.load(Ordering::SeqCst)
    }

    /// Places `peer` holds now.
    pub fn held_by(&self, peer: IpAddr) -> usize {
        let peer = peer_of(peer);
        self.peers.lock().map_or(0, |peers| {
            peers
                .by_peer
                .get(&peer)
                .and_then(Weak::upgrade)
                .map_or(0, |count| count.held.load(Ordering::SeqCst))
        })
    }

    /// Resolves once no place is taken.
    pub async fn emptied(&self) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        loop {
            let woken = self.emptied.notified();
            if self.taken() == 0 {
                return;
            }
            woken.await;
        }
    }

    fn give_back(&self, n: usize) {
        // The last place back wakes whoever waits for none (a drain);
        // when no one does, no lock is taken.
        if self.all.fetch_sub(n, Ordering::SeqCst) == n && self.waiting.load(Ordering::SeqCst) > 0 {
            self.emptied.notify_waiters();
        }
    }
}

/// A waiter of [`Shares::emptied`], counted until it returns or is dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Adds `n` to `count` unless it would pass `max`.
fn add_within(count: &AtomicUsize, n: usize, max: usize) -> bool {
    count
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |held| {
            held.checked_add(n).filter(|after| *after <= max)
        })
        .is_ok()
}

impl Account {
    /// A place, unless every place or the peer's share is taken.
    pub fn take(&self) -> Result<Share, Full> {
        self.take_many(1)
    }

    /// `n` places at once, unless they would pass the total or the peer's
    /// share.
    pub fn take_many(&self, n: usize) -> Result<Share, Full> {
        let n = n.max(1);
        let shares = &self.shares;
        // The peer's share first: a peer at its share, asking again and
        // again, never counts in the total even for a moment, so it
        // cannot make anyone else's take find every place taken.
        if !add_within(&self.count.held, n, shares.per_peer) {
            return Err(Full::Peer);
        }
        if !add_within(&shares.all, n, shares.total) {
            self.count.held.fetch_sub(n, Ordering::SeqCst);
            return Err(Full::Everyone);
        }
        Ok(Share {
            shares: shares.clone(),
            count: self.count.clone(),
            places: n,
        })
    }
}

/// The peer an address belongs to: itself for IPv4, its /64 for IPv6.
pub fn peer_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from_bits(
                v6.to_bits() & !((1u128 << 64) - 1),
            )),
        },
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.count.held.fetch_sub(self.places, Ordering::SeqCst);
        self.shares.give_back(self.places);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn no_peer_takes_more_than_its_share_and_places_come_back() {
        let shares = Shares::new(5, 2);
        let a1 = shares.take(ip(1)).unwrap();
        let a2 = shares.take(ip(1)).unwrap();
        assert_eq!(shares.take(ip(1)).unwrap_err(), Full::Peer);
        let b: Vec<Share> = (0..2).map(|_| shares.take(ip(2)).unwrap()).collect();
        let c = shares.take(ip(3)).unwrap();
        assert_eq!(shares.take(ip(4)).unwrap_err(), Full::Everyone);
        assert_eq!(shares.taken(), 5);
        drop(a1);
        assert_eq!(shares.held_by(ip(1)), 1);
        let _a3 = shares.take(ip(1)).unwrap();
        drop((a2, b, c));
        assert_eq!(shares.taken(), 1);
        assert_eq!(shares.held_by(ip(2)), 0);
    }

    #[test]
    fn an_ipv6_host_is_one_peer_whatever_address_of_its_64_it_picks() {
        let shares = Shares::new(10, 2);
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::ffff:1234".parse().unwrap();
        let other: IpAddr = "2001:db8:0:1::1".parse().unwrap();
        let _a = shares.take(a).unwrap();
        let _b = shares.take(b).unwrap();
        assert_eq!(
            shares.take("2001:db8::99".parse().unwrap()).unwrap_err(),
            Full::Peer
        );
        assert!(shares.take(other).is_ok());
        let mapped: IpAddr = "::ffff:127.0.0.9".parse().unwrap();
        let _m = shares.take(mapped).unwrap();
        assert_eq!(shares.held_by(ip(9)), 1);
    }

    #[test]
    fn many_places_are_taken_and_given_back_together() {
        let shares = Shares::new(100, 40);
        let a = shares.take_many(ip(1), 30).unwrap();
        assert_eq!(shares.take_many(ip(1), 11).unwrap_err(), Full::Peer);
        let _b = shares.take_many(ip(2), 40).unwrap();
        assert_eq!(shares.take_many(ip(3), 31).unwrap_err(), Full::Everyone);
        assert_eq!(shares.held_by(ip(3)), 0);
        drop(a);
        assert_eq!(shares.taken(), 40);
        assert!(shares.take_many(ip(1), 40).is_ok());
    }

    #[test]
    fn a_share_is_at_least_one_and_at_most_the_total() {
        assert_eq!(Shares::new(0, 0).per_peer(), 1);
        assert_eq!(Shares::new(3, 10).per_peer(), 3);
    }

    #[test]
    fn an_account_counts_with_every_other_of_its_peer_and_the_map_keeps_only_the_living() {
        let shares = Shares::new(10, 3);
        let first = shares.account(ip(1));
        let second = shares.account(ip(1));
        let held: Vec<Share> = (0..2).map(|_| first.take().unwrap()).collect();
        let third = second.take().unwrap();
        assert_eq!(second.take().unwrap_err(), Full::Peer);
        assert_eq!(shares.take(ip(1)).unwrap_err(), Full::Peer);
        assert_eq!(shares.held_by(ip(1)), 3);
        // A place outlives the accounts it came from, and is still counted.
        drop((first, second, held));
        assert_eq!(shares.held_by(ip(1)), 1);
        assert_eq!(shares.account(ip(1)).take_many(3).unwrap_err(), Full::Peer);
        drop(third);
        assert_eq!((shares.taken(), shares.held_by(ip(1))), (0, 0));
        // Peers come and go by the thousand: the map holds about those
        // alive, not every peer ever seen.
        let kept = shares.account(ip(2));
        for i in 0..10_000u32 {
            let peer = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            drop(shares.take(peer).unwrap());
        }
        let peers = shares.peers.lock().unwrap().by_peer.len();
        assert!(peers <= 130, "{peers} entries");
        assert!(kept.take().is_ok());
    }

    #[test]
    fn a_peer_at_its_share_never_fills_the_places_of_others() {
        // One place left for anyone; a peer at its share keeps asking on
        // another thread. It is refused as a peer, and never takes the
        // last place from the others even for a moment.
        let shares = Shares::new(2, 1);
        let _held = shares.take(ip(1)).unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let greedy = shares.account(ip(1));
                while !stop.load(Ordering::Relaxed) {
                    assert_eq!(greedy.take().unwrap_err(), Full::Peer);
                }
            });
            let other = shares.account(ip(2));
            for _ in 0..200_000 {
                assert!(other.take().is_ok(), "the last place was not there");
            }
            stop.store(true, Ordering::Relaxed);
        });
        assert_eq!(shares.taken(), 1);
    }

    #[tokio::test]
    async fn emptied_waits_for_the_last_place() {
        let shares = Shares::new(2, 2);
        let held = shares.take(ip(1)).unwrap();
        let waiting = tokio::spawn({
            let shares = shares.clone();
            async move { shares.emptied().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(held);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
    }
}
