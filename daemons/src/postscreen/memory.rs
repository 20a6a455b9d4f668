//! What postscreen remembers of a client: until when each test it passed
//! holds. Kept in the state store (namespace "postscreen"), so results
//! survive a restart, with the most recent clients also in memory; both
//! are bounded. The store is a cache: when it cannot be reached, a
//! client is simply screened again.
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postern_proto::screen::Test;
use serde::{Deserialize, Serialize};

/// Clients kept in memory besides the store.
const IN_MEMORY: usize = 10_000;

/// Seconds since the epoch until which each test's pass holds (0: no
/// pass). Postfix's cache record, one time stamp per test.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub pregreet: u64,
    pub dnsbl: u64,
    pub pipelining: u64,
    pub non_smtp: u64,
    pub bare_newline: u64,
}

impl Record {
    pub fn deep(&self, t: Test) -> u64 {
        match t {
            Test::Pipelining => self.pipelining,
            Test::NonSmtp => self.non_smtp,
            Test::BareNewline => self.bare_newline,
        }
    }

    pub fn set_deep(&mut self, t: Test, until: u64) {
        match t {
            Test::Pipelining => self.pipelining = until,
            Test::NonSmtp => self.non_smtp = until,
            Test::BareNewline => self.bare_newline = until,
        }
    }

    /// The latest time any pass holds.
    pub fn last(&self) -> u64 {
        [
            self.pregreet,
            self.dnsbl,
            self.pipelining,
            self.non_smtp,
            self.bare_newline,
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn until(now: u64, ttl: Duration) -> u64 {
    now.saturating_add(ttl.as_secs())
}

/// The store's name for a client.
fn key(ip: IpAddr) -> String {
    crate::access::normalize(ip).to_string()
}

pub struct Memory {
    recent: HashMap<IpAddr, Record>,
    order: VecDeque<IpAddr>,
    store: std::rc::Rc<crate::cache::client::Client>,
}

impl Memory {
    pub fn new(sb: crate::daemon::Switchboard) -> Memory {
        Memory {
            recent: HashMap::new(),
            order: VecDeque::new(),
            store: std::rc::Rc::new(crate::cache::client::Client::new(sb, "postscreen")),
        }
    }

    fn remember(&mut self, ip: IpAddr, r: Record) {
        if self.recent.insert(ip, r).is_none() {
            self.order.push_back(ip);
            while self.order.len() > IN_MEMORY {
                if let Some(old) = self.order.pop_front() {
                    self.recent.remove(&old);
                }
            }
        }
    }
}

/// Looks a client up: memory first, then the store.
pub async fn get(m: &std::cell::RefCell<Memory>, ip: IpAddr) -> Record {
    let ip = crate::access::normalize(ip);
    if let Some(r) = m.borrow().recent.get(&ip) {
        return *r;
    }
    let store = m.borrow().store.clone();
    let found = store
        .get(&key(ip))
        .await
        .and_then(|(v, _)| postcard::from_bytes::<Record>(&v).ok())
        .unwrap_or_default();
    m.borrow_mut().remember(ip, found);
    found
}

/// Keeps a client's record, for `retention` past its last pass.
pub fn put(m: &std::cell::RefCell<Memory>, ip: IpAddr, r: Record, retention: Duration) {
    let ip = crate::access::normalize(ip);
    m.borrow_mut().remember(ip, r);
    let store = m.borrow().store.clone();
    let ttl = Duration::from_secs(r.last().saturating_sub(now())) + retention;
    let value = postcard::to_allocvec(&r).unwrap_or_default();
    tokio::task::spawn_local(async move {
        store.put(&key(ip), value, ttl).await;
    });
}
