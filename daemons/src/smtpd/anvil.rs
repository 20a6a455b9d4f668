//! anvil(8) inside smtpd: per-client connection counts and event rates
//! for the `smtpd_client_*_limit` parameters. Postern runs one smtpd
//! process for every listener, so one table here sees every session, as
//! Postfix's anvil server sees every smtpd process. As in Postfix, a
//! client is counted per service (`for service smtp`), and an IPv6
//! client by its `smtpd_client_ipv6_prefix_length` network.
//!
//! Rates count events in the current `anvil_rate_time_unit`: the window
//! starts at a client's first event and all its rates restart when it
//! has passed.
//!
//! The table has a hard cap ([`MAX_CLIENTS`]): when it is full, the
//! client seen least recently goes first (one with sessions open only when
//! every other is older, which needs more open sessions than the process
//! has descriptors). So a flood of distinct addresses costs bounded
//! memory, and at worst lets an evicted client start its count afresh.
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Most (service, client) entries kept.
pub const MAX_CLIENTS: usize = 65_536;

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Connect,
    Mail,
    Rcpt,
    NewTls,
    Auth,
}

/// A client as the limits see it: the service, and the address (an IPv6
/// address reduced to its network).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    service: Rc<str>,
    v6: bool,
    addr: u128,
}

impl Key {
    pub fn new(service: Rc<str>, ip: IpAddr, ipv6_prefix: u8) -> Key {
        match crate::access::normalize(ip) {
            IpAddr::V4(a) => Key {
                service,
                v6: false,
                addr: u128::from(u32::from(a)),
            },
            IpAddr::V6(a) => {
                let bits = u128::from(a);
                let keep = u32::from(ipv6_prefix.min(128));
                let mask = if keep == 0 {
                    0
                } else {
                    u128::MAX << (128 - keep)
                };
                Key {
                    service,
                    v6: true,
                    addr: bits & mask,
                }
            }
        }
    }
}

#[derive(Debug)]
struct Entry {
    /// Position in the recency order.
    seq: u64,
    /// Sessions open now.
    count: u32,
    /// When the current rate window started.
    start: Instant,
    rates: [u32; 5],
}

#[derive(Debug)]
pub struct Anvil {
    unit: Duration,
    cap: usize,
    map: HashMap<Key, Entry>,
    /// Recency order: sequence number to key, oldest first.
    lru: BTreeMap<u64, Key>,
    seq: u64,
}

fn slot(e: Event) -> usize {
    match e {
        Event::Connect => 0,
        Event::Mail => 1,
        Event::Rcpt => 2,
        Event::NewTls => 3,
        Event::Auth => 4,
    }
}

impl Anvil {
    pub fn new(unit: Duration) -> Anvil {
        Anvil::with_cap(unit, MAX_CLIENTS)
    }

    pub fn with_cap(unit: Duration, cap: usize) -> Anvil {
        Anvil {
            unit,
            cap: cap.max(1),
            map: HashMap::new(),
            lru: BTreeMap::new(),
            seq: 0,
        }
    }

    /// The entry for `k`, made (evicting the oldest when full) if new,
    /// moved to the recent end, its rates restarted if the window passed.
    fn touch(&mut self, k: &Key, now: Instant) -> &mut Entry {
        self.seq += 1;
        let seq = self.seq;
        if !self.map.contains_key(k) {
            self.make_room();
        }
        let e = self.map.entry(k.clone()).or_insert(Entry {
            seq,
            count: 0,
            start: now,
            rates: [0; 5],
        });
        if e.seq != seq {
            self.lru.remove(&e.seq);
            e.seq = seq;
        }
        self.lru.insert(seq, k.clone());
        if now.duration_since(e.start) >= self.unit {
            e.start = now;
            e.rates = [0; 5];
        }
        // Evictions leave tombstones, and a table full of them grows to
        // twice its size on the next insert although it holds no more
        // clients: rebuilt at the cap's size instead, so the room stays
        // within twice the cap whatever the churn.
        if self.map.capacity() > 2 * self.cap {
            self.map.shrink_to(self.cap);
        }
        self.map.entry(k.clone()).or_insert(Entry {
            seq,
            count: 0,
            start: now,
            rates: [0; 5],
        })
    }

    /// Evicts until there is room for one more: the least recently seen
    /// first, passing over clients with sessions open a bounded number of
    /// times.
    fn make_room(&mut self) {
        let mut passes = 0;
        while self.map.len() >= self.cap {
            let Some((_, key)) = self.lru.pop_first() else {
                return;
            };
            let busy = self.map.get(&key).is_some_and(|e| e.count > 0);
            if busy && passes < 16 {
                passes += 1;
                self.seq += 1;
                let s = self.seq;
                if let Some(e) = self.map.get_mut(&key) {
                    e.seq = s;
                }
                self.lru.insert(s, key);
                continue;
            }
            self.map.remove(&key);
        }
    }

    /// A session starts: its count of open sessions and its connection
    /// rate, this one included.
    pub fn connect(&mut self, k: &Key, now: Instant) -> (u32, u32) {
        let e = self.touch(k, now);
        e.count = e.count.saturating_add(1);
        e.rates[slot(Event::Connect)] = e.rates[slot(Event::Connect)].saturating_add(1);
        (e.count, e.rates[slot(Event::Connect)])
    }

    /// A session ends.
    pub fn disconnect(&mut self, k: &Key) {
        if let Some(e) = self.map.get_mut(k) {
            e.count = e.count.saturating_sub(1);
        }
    }

    /// Counts one event; its rate in this window, this one included.
    pub fn event(&mut self, k: &Key, ev: Event, now: Instant) -> u32 {
        let e = self.touch(k, now);
        let r = &mut e.rates[slot(ev)];
        *r = r.saturating_add(1);
        *r
    }

    /// The rate of `ev` in this window, without counting one.
    pub fn rate(&mut self, k: &Key, ev: Event, now: Instant) -> u32 {
        self.touch(k, now).rates[slot(ev)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ip: &str) -> Key {
        Key::new(Rc::from("smtp"), ip.parse().unwrap(), 84)
    }

    #[test]
    fn counts_and_rates_per_service_and_client() {
        let mut a = Anvil::new(Duration::from_secs(60));
        let t = Instant::now();
        let k = key("192.0.2.1");
        assert_eq!(a.connect(&k, t), (1, 1));
        assert_eq!(a.connect(&k, t), (2, 2));
        a.disconnect(&k);
        assert_eq!(a.connect(&k, t), (2, 3));
        // Another service is another client.
        let sub = Key::new(Rc::from("submission"), "192.0.2.1".parse().unwrap(), 84);
        assert_eq!(a.connect(&sub, t), (1, 1));
        assert_eq!(a.event(&k, Event::Mail, t), 1);
        assert_eq!(a.event(&k, Event::Mail, t), 2);
        assert_eq!(a.rate(&k, Event::Mail, t), 2);
        assert_eq!(a.rate(&k, Event::Rcpt, t), 0);
        // A new window: rates restart, open sessions stay.
        let later = t + Duration::from_secs(61);
        assert_eq!(a.rate(&k, Event::Mail, later), 0);
        assert_eq!(a.connect(&k, later), (3, 1));
        // Disconnects never go below zero.
        for _ in 0..10 {
            a.disconnect(&k);
        }
        assert_eq!(a.connect(&k, later), (1, 2));
    }

    #[test]
    fn ipv6_clients_count_by_network() {
        let mut a = Anvil::new(Duration::from_secs(60));
        let t = Instant::now();
        // Same /84: one client.
        assert_eq!(a.connect(&key("2001:db8::1"), t), (1, 1));
        assert_eq!(a.connect(&key("2001:db8::fff:1"), t), (2, 2));
        // Beyond the /84: another.
        assert_eq!(a.connect(&key("2001:db8:0:0:0:1000::1"), t), (1, 1));
        assert_eq!(a.connect(&key("2001:db8:0:0:0:fff::1"), t), (3, 3));
        // An IPv4-mapped address is the IPv4 client.
        assert_eq!(a.connect(&key("192.0.2.7"), t), (1, 1));
        assert_eq!(a.connect(&key("::ffff:192.0.2.7"), t), (2, 2));
    }

    #[test]
    fn a_million_clients_stay_within_the_cap() {
        let cap = 10_000;
        let mut a = Anvil::with_cap(Duration::from_secs(60), cap);
        let t = Instant::now();
        // A few clients keep sessions open throughout.
        let busy: Vec<Key> = (0..5).map(|i| key(&format!("198.51.100.{i}"))).collect();
        for k in &busy {
            a.connect(k, t);
        }
        for i in 0u32..1_000_000 {
            let ip = IpAddr::from((0x0a00_0000u32 + i).to_be_bytes());
            let k = Key::new(Rc::from("smtp"), ip, 84);
            a.connect(&k, t);
            a.disconnect(&k);
            assert!(a.map.len() <= cap);
            // Never more room than twice the cap, at any moment.
            assert!(a.map.capacity() <= 2 * cap + 16, "{}", a.map.capacity());
        }
        assert_eq!(a.map.len(), cap);
        assert_eq!(a.lru.len(), cap);
        // The map never needed more room than the cap.
        assert!(a.map.capacity() <= 2 * cap + 16, "{}", a.map.capacity());
        // The open sessions were not forgotten.
        for k in &busy {
            assert_eq!(a.connect(k, t).0, 2);
        }
    }
}
