//! The state store's namespace files (the cache role's `$data_directory/
//! cache/NAME`), sans-IO: a header (magic and the namespace's record
//! version), then records, each `[u32 length][u32 crc32][postcard]`.
//!
//! The files are written by the cache role and read back after a restart,
//! so a file is only as trustworthy as the disk: a record whose checksum
//! or encoding is wrong is dropped and counted; a length past the cap ends
//! the file (nothing after it can be trusted to line up); a file of
//! another version is dropped whole. Fuzz target `state_file`.
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 8] = b"PSTSTATE";
/// Magic and version.
pub const HEADER: usize = 12;

/// One stored record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub key: String,
    pub value: Vec<u8>,
    /// Unix seconds.
    pub expires: u64,
}

/// What a namespace allows.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub version: u32,
    pub max_key: usize,
    pub max_value: usize,
}

impl Limits {
    /// The largest encoded record a file may hold.
    pub fn max_record(&self) -> usize {
        self.max_key + self.max_value + 32
    }
}

/// What reading a file found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    pub records: Vec<Record>,
    /// Records dropped for a bad checksum, encoding or size.
    pub corrupt: usize,
    /// Why the rest of the file (or all of it) was not read.
    pub stopped: Option<String>,
}

/// The file image of `records`, in order. A record that does not encode is
/// left out.
pub fn encode<'a>(version: u32, records: impl IntoIterator<Item = &'a Record>) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + 64);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    for r in records {
        let Ok(body) = postcard::to_allocvec(r) else {
            continue;
        };
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
    }
    out
}

/// Reads a file image within `lim`.
pub fn decode(data: &[u8], lim: Limits) -> Decoded {
    let mut d = Decoded::default();
    if data.is_empty() {
        return d;
    }
    if data.len() < HEADER || &data[..8] != MAGIC {
        d.stopped = Some("not a state file".into());
        return d;
    }
    let version = u32::from_le_bytes([data[8], data[9], data[10], data[11]]);
    if version != lim.version {
        d.stopped = Some(format!(
            "record version {version}, this build reads {}",
            lim.version
        ));
        return d;
    }
    let mut at = HEADER;
    while at < data.len() {
        let Some(head) = data.get(at..at + 8) else {
            d.stopped = Some(format!("a torn record header at byte {at}"));
            break;
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let Some(body) = data
            .get(at + 8..at.saturating_add(8).saturating_add(len))
            .filter(|_| len <= lim.max_record())
        else {
            d.stopped = Some(format!("a bad record length {len} at byte {at}"));
            break;
        };
        at += 8 + len;
        let rec = (crc32fast::hash(body) == crc)
            .then(|| postcard::from_bytes::<Record>(body).ok())
            .flatten()
            .filter(|r| r.key.len() <= lim.max_key && r.value.len() <= lim.max_value);
        match rec {
            Some(r) => d.records.push(r),
            None => d.corrupt += 1,
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIM: Limits = Limits {
        version: 3,
        max_key: 64,
        max_value: 100,
    };

    fn rec(k: &str, v: &str, expires: u64) -> Record {
        Record {
            key: k.into(),
            value: v.as_bytes().to_vec(),
            expires,
        }
    }

    #[test]
    fn round_trip_corruption_and_limits() {
        let rs = vec![
            rec("a", "one", 10),
            rec("b", "two", 20),
            rec("c", "three", 30),
        ];
        let file = encode(3, &rs);
        assert_eq!(decode(&file, LIM).records, rs);
        // A flipped byte in the second record drops that record only.
        let first = u32::from_le_bytes(file[HEADER..HEADER + 4].try_into().unwrap()) as usize;
        let second = HEADER + 8 + first;
        let mut bad = file.clone();
        bad[second + 8 + 1] ^= 0x55;
        let d = decode(&bad, LIM);
        assert_eq!(
            (d.records.len(), d.corrupt, d.stopped.is_none()),
            (2, 1, true)
        );
        // A length past the cap ends the file.
        let mut cut = file.clone();
        cut[second..second + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let d = decode(&cut, LIM);
        assert_eq!(d.records.len(), 1);
        assert!(d.stopped.unwrap().contains("bad record length"));
        // Another version, another file type, a torn header.
        assert!(
            decode(&file, Limits { version: 4, ..LIM })
                .stopped
                .unwrap()
                .contains("version 3")
        );
        assert!(decode(b"nonsense data", LIM).stopped.is_some());
        let d = decode(&file[..file.len() - 3], LIM);
        assert_eq!(d.records.len(), 2);
        assert!(decode(&[], LIM) == Decoded::default());
        // A record over the value cap is dropped on read.
        let big = encode(3, &[rec("k", &"x".repeat(101), 1)]);
        assert_eq!(decode(&big, LIM).corrupt, 1);
    }
}
