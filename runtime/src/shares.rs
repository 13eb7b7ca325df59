//! A cap with a share per peer: a limited number of places of which no one
//! peer may hold more than its share, so one address cannot take them all
//! and lock every other caller out. Every listener counts its connections
//! with it, and the sidecar its calls in flight.
//!
//! A peer is an IPv4 address, or an IPv6 /64 (one host may pick its
//! source address from a whole /64; an IPv4-mapped address is its IPv4
//! one). A place is taken at once or refused at once ([`Shares::take`]);
//! it is given back when its [`Share`] is dropped. Counting is one short
//! lock per take and per release.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Places shared by peers: at most `total` at once, at most `per_peer` of
/// them for one peer address.
#[derive(Debug)]
pub struct Shares {
    total: usize,
    per_peer: usize,
    taken: Mutex<Taken>,
    /// Woken each time the last place is given back.
    emptied: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Taken {
    all: usize,
    by_peer: HashMap<IpAddr, usize>,
}

/// Why no place was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// Every place is taken.
    Everyone,
    /// The peer holds its whole share.
    Peer,
}

/// A place held by one peer, given back on drop.
#[derive(Debug)]
pub struct Share {
    shares: Arc<Shares>,
    peer: IpAddr,
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
            taken: Mutex::new(Taken::default()),
            emptied: tokio::sync::Notify::new(),
        })
    }

    pub fn total(&self) -> usize {
        self.total
    }

    pub fn per_peer(&self) -> usize {
        self.per_peer
    }

    /// A place for `peer`, unless every place or the peer's share is taken.
    pub fn take(self: &Arc<Self>, peer: IpAddr) -> Result<Share, Full> {
        self.take_many(peer, 1)
    }

    /// `n` places at once for `peer` (a budget of bytes, counted in
    /// places), unless they would pass the total or the peer's share.
    pub fn take_many(self: &Arc<Self>, peer: IpAddr, n: usize) -> Result<Share, Full> {
        let peer = peer_of(peer);
        let n = n.max(1);
        let Ok(mut taken) = self.taken.lock() else {
            return Err(Full::Everyone);
        };
        if taken.all.saturating_add(n) > self.total {
            return Err(Full::Everyone);
        }
        let held = taken.by_peer.entry(peer).or_insert(0);
        if held.saturating_add(n) > self.per_peer {
            if *held == 0 {
                taken.by_peer.remove(&peer);
            }
            return Err(Full::Peer);
        }
        *held += n;
        taken.all += n;
        Ok(Share {
            shares: self.clone(),
            peer,
            places: n,
        })
    }

    /// Places taken now.
    pub fn taken(&self) -> usize {
        self.taken.lock().map_or(0, |t| t.all)
    }

    /// Places `peer` holds now.
    pub fn held_by(&self, peer: IpAddr) -> usize {
        let peer = peer_of(peer);
        self.taken
            .lock()
            .map_or(0, |t| t.by_peer.get(&peer).copied().unwrap_or(0))
    }

    /// Resolves once no place is taken.
    pub async fn emptied(&self) {
        loop {
            let woken = self.emptied.notified();
            if self.taken() == 0 {
                return;
            }
            woken.await;
        }
    }

    fn give_back(&self, peer: IpAddr, n: usize) {
        let Ok(mut taken) = self.taken.lock() else {
            return;
        };
        taken.all = taken.all.saturating_sub(n);
        if let Some(held) = taken.by_peer.get_mut(&peer) {
            *held = held.saturating_sub(n);
            if *held == 0 {
                taken.by_peer.remove(&peer);
            }
        }
        if taken.all == 0 {
            self.emptied.notify_waiters();
        }
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
        self.shares.give_back(self.peer, self.places);
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
