//! The state store's data: namespaces, their records, caps and expiry, and
//! the file each namespace is kept in. No I/O but reading and writing one
//! namespace file; the cache role's event loop is in `mod.rs`.
//!
//! The file format (a header, then checksummed postcard records, read
//! within the namespace's caps) is `postern_proto::statefile`, sans-IO and
//! fuzzed.
use std::collections::HashMap;

use postern_config::Role;
use postern_proto::statefile::{self, Limits, Record};

/// One kind of state, owned by one role.
#[derive(Debug)]
pub struct Namespace {
    pub name: &'static str,
    /// The only role that may write it.
    pub owner: Role,
    /// Roles that may read it besides the owner.
    pub readers: &'static [Role],
    /// The owner's record format; a file of another version is dropped.
    pub version: u32,
    pub max_entries: usize,
    pub max_value: usize,
}

/// Every namespace. A coming cache (postscreen results, address-verify
/// results, MTA-STS policies, TLS-RPT counters, anvil state) is one entry
/// here with its owner.
pub const NAMESPACES: &[Namespace] = &[
    Namespace {
        // SASL login failures per client and per account, so a restart of
        // auth (a reload, a crash) does not hand out a fresh budget.
        name: "auth-failures",
        owner: Role::Auth,
        readers: &[],
        version: 1,
        max_entries: 20_000,
        max_value: 1024,
    },
    Namespace {
        // Address-verification results (address_verify_map): only the
        // verify role, which alone asks for probes, writes them.
        name: "address-verify",
        owner: Role::Verify,
        readers: &[],
        version: 1,
        max_entries: 100_000,
        max_value: 1024,
    },
    Namespace {
        // postscreen(8)'s results per client address: when each test
        // passed last and until when that holds.
        name: "postscreen",
        owner: Role::Postscreen,
        readers: &[],
        version: 1,
        max_entries: 100_000,
        max_value: 128,
    },
    Namespace {
        // MTA-STS policies by recipient domain: the TXT record's id and
        // the policy as its file says it, kept for its max_age.
        name: "mta-sts",
        owner: Role::Sts,
        readers: &[],
        version: 1,
        max_entries: 50_000,
        max_value: 4096,
    },
    Namespace {
        // TLS-RPT: each (UTC day, recipient domain)'s session counts per
        // policy until its report went out, and their index.
        name: "tls-rpt",
        owner: Role::Sts,
        readers: &[],
        version: 1,
        max_entries: 1_001,
        max_value: 4096,
    },
];

pub fn namespace(name: &str) -> Option<&'static Namespace> {
    NAMESPACES.iter().find(|n| n.name == name)
}

#[derive(Debug, Clone)]
struct Entry {
    value: Vec<u8>,
    expires: u64,
    /// A counter: larger is more recently used.
    used: u64,
}

/// One namespace in memory.
#[derive(Debug)]
pub struct Space {
    pub ns: &'static Namespace,
    map: HashMap<String, Entry>,
    clock: u64,
    /// Changed since the last save.
    pub dirty: bool,
}

/// What loading a file found wrong, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    pub loaded: usize,
    pub corrupt: usize,
    pub expired: usize,
    /// Why the rest of the file (or all of it) was not read.
    pub stopped: Option<String>,
}

impl Space {
    pub fn new(ns: &'static Namespace) -> Space {
        Space {
            ns,
            map: HashMap::new(),
            clock: 0,
            dirty: false,
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    pub fn get(&mut self, key: &str, now: u64) -> Option<(Vec<u8>, u64)> {
        let t = self.tick();
        let e = self.map.get_mut(key)?;
        if e.expires <= now {
            self.map.remove(key);
            self.dirty = true;
            return None;
        }
        e.used = t;
        Some((e.value.clone(), e.expires - now))
    }

    pub fn put(&mut self, key: String, value: Vec<u8>, expires: u64, now: u64) {
        if !self.map.contains_key(&key) && self.map.len() >= self.ns.max_entries {
            self.make_room(now);
        }
        let used = self.tick();
        self.map.insert(
            key,
            Entry {
                value,
                expires,
                used,
            },
        );
        self.dirty = true;
    }

    pub fn delete(&mut self, key: &str) -> bool {
        let had = self.map.remove(key).is_some();
        self.dirty |= had;
        had
    }

    /// Drops expired entries, then, if still full, the least recently used
    /// sixteenth (so a full table is not scanned on every insert).
    fn make_room(&mut self, now: u64) {
        self.map.retain(|_, e| e.expires > now);
        if self.map.len() < self.ns.max_entries {
            return;
        }
        let mut used: Vec<u64> = self.map.values().map(|e| e.used).collect();
        let n = (self.ns.max_entries / 16).max(1);
        used.select_nth_unstable(n - 1);
        let cut = used[n - 1];
        self.map.retain(|_, e| e.used > cut);
    }

    /// The file image of the live entries.
    pub fn encode(&self, now: u64) -> Vec<u8> {
        let mut live: Vec<(&String, &Entry)> =
            self.map.iter().filter(|(_, e)| e.expires > now).collect();
        // Oldest use first, so a reload restores the same order of use.
        live.sort_by_key(|(_, e)| e.used);
        let records: Vec<Record> = live
            .into_iter()
            .map(|(k, e)| Record {
                key: k.clone(),
                value: e.value.clone(),
                expires: e.expires,
            })
            .collect();
        statefile::encode(self.ns.version, &records)
    }

    fn limits(&self) -> Limits {
        Limits {
            version: self.ns.version,
            max_key: postern_ipc::cache::MAX_KEY,
            max_value: self.ns.max_value,
        }
    }

    /// The largest file of this namespace that is read.
    pub fn max_file(&self) -> u64 {
        (statefile::HEADER + self.ns.max_entries * (8 + self.limits().max_record())) as u64
    }

    /// Loads a file image, dropping what is corrupt or expired.
    pub fn load(&mut self, data: &[u8], now: u64) -> LoadReport {
        let d = statefile::decode(data, self.limits());
        let mut rep = LoadReport {
            corrupt: d.corrupt,
            stopped: d.stopped,
            ..LoadReport::default()
        };
        for r in d.records {
            if r.expires <= now {
                rep.expired += 1;
            } else {
                self.put(r.key, r.value, r.expires, now);
            }
        }
        rep.loaded = self.map.len();
        self.dirty = rep.corrupt > 0 || rep.expired > 0 || rep.stopped.is_some();
        rep
    }
}

/// What `role` may do in the namespace `name`: Err says why not.
pub fn check_access(role: Role, name: &str, write: bool) -> Result<&'static Namespace, String> {
    let ns = namespace(name).ok_or_else(|| format!("no namespace {name}"))?;
    if ns.owner == role || (!write && ns.readers.contains(&role)) {
        Ok(ns)
    } else if write {
        Err(format!(
            "{role} may not write namespace {name} (owned by {})",
            ns.owner
        ))
    } else {
        Err(format!("{role} may not read namespace {name}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: Namespace = Namespace {
        name: "test",
        owner: Role::Auth,
        readers: &[Role::Smtpd],
        version: 3,
        max_entries: 64,
        max_value: 100,
    };

    fn space() -> Space {
        static NS: Namespace = SMALL;
        Space::new(&NS)
    }

    #[test]
    fn records_round_trip_through_the_file_and_expire() {
        let mut s = space();
        s.put("a".into(), b"one".to_vec(), 1_000, 100);
        s.put("b".into(), b"two".to_vec(), 150, 100);
        let file = s.encode(100);
        let mut t = space();
        let rep = t.load(&file, 120);
        assert_eq!((rep.loaded, rep.corrupt, rep.expired), (2, 0, 0));
        assert_eq!(t.get("a", 120), Some((b"one".to_vec(), 880)));
        // Past its time, a record is gone, in memory and in the next file.
        assert_eq!(t.get("b", 150), None);
        let mut u = space();
        let rep = u.load(&file, 200);
        assert_eq!((rep.loaded, rep.expired), (1, 1));
        assert!(u.dirty, "dropping an expired record rewrites the file");
    }

    #[test]
    fn a_corrupt_record_is_dropped_and_the_rest_kept() {
        let mut s = space();
        for k in ["a", "b", "c"] {
            s.put(k.into(), k.repeat(10).into_bytes(), 1_000, 0);
        }
        let mut file = s.encode(0);
        // Flip one byte inside the second record's body.
        let first = u32::from_le_bytes(
            file[statefile::HEADER..statefile::HEADER + 4]
                .try_into()
                .unwrap(),
        ) as usize;
        let second = statefile::HEADER + 8 + first;
        file[second + 8 + 2] ^= 0x55;
        let mut t = space();
        let rep = t.load(&file, 0);
        assert_eq!(
            (rep.loaded, rep.corrupt, rep.stopped.is_none()),
            (2, 1, true)
        );
        assert!(t.dirty);
        // A length past the cap ends the file; what came before stays.
        let mut cut = s.encode(0);
        cut[second..second + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut u = space();
        let rep = u.load(&cut, 0);
        assert_eq!(rep.loaded, 1);
        assert!(rep.stopped.unwrap().contains("bad record length"));
        // A torn tail (a crash mid-write of an older format) likewise.
        let mut v = space();
        let rep = v.load(&file[..file.len() - 3], 0);
        assert!(rep.stopped.is_some() || rep.corrupt > 0);
        // Another version, or not a state file at all: dropped whole.
        let mut other = s.encode(0);
        other[8] = 9;
        assert_eq!(space().load(&other, 0).loaded, 0);
        assert!(space().load(b"garbage", 0).stopped.is_some());
    }

    #[test]
    fn the_entry_cap_holds_and_drops_the_least_recently_used() {
        let mut s = space();
        for i in 0..64 {
            s.put(format!("k{i}"), vec![1], 1_000, 0);
        }
        // Use k0, so it survives the eviction.
        assert!(s.get("k0", 0).is_some());
        for i in 64..1000 {
            s.put(format!("k{i}"), vec![1], 1_000, 0);
            assert!(s.len() <= 64);
        }
        assert!(s.get("k999", 0).is_some());
        assert!(
            s.get("k1", 0).is_none(),
            "the least recently used went first"
        );
    }

    #[test]
    fn only_the_owner_writes_and_listed_readers_read() {
        assert!(check_access(Role::Auth, "auth-failures", true).is_ok());
        let e = check_access(Role::Smtpd, "auth-failures", true).unwrap_err();
        assert!(e.contains("may not write namespace auth-failures"), "{e}");
        assert!(check_access(Role::Smtpd, "auth-failures", false).is_err());
        assert!(check_access(Role::Auth, "no-such", false).is_err());
        // Every namespace has a distinct name and a cap.
        for (i, n) in NAMESPACES.iter().enumerate() {
            assert!(n.max_entries > 0 && n.max_value <= postern_ipc::cache::MAX_VALUE);
            assert!(n.name.len() <= postern_ipc::cache::MAX_NAMESPACE);
            assert!(NAMESPACES[i + 1..].iter().all(|m| m.name != n.name));
        }
    }
}
