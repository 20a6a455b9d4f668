//! Queue-file records: versioned, append-only, each framed as
//! `[u32 LE length][u32 LE crc32][postcard payload]`.
//!
//! A file is a sequence of records. cleanup writes the envelope and content
//! and the end-of-content record; the broker appends `Commit` once the
//! message is durable and visible, and later state records (delivered,
//! deferred, held) as they happen. A torn tail (a crash mid-append) fails its
//! length or checksum and ends the file; a bad record before `Commit`
//! means the message was never committed.
use serde::{Deserialize, Serialize};

/// Bump when a record's shape changes or a record is added; readers
/// refuse newer files (and leave them in the queue untouched).
pub const VERSION: u16 = 3;
/// What a file that holds no record newer than version 1 says it is, so
/// that a rollback to a version-1 reader still delivers it: cleanup writes
/// [`VERSION_2`] only into files with a `Signable` record, and
/// [`VERSION`] only into files with a `RequireTls` record.
pub const VERSION_1: u16 = 1;
pub const VERSION_2: u16 = 2;
/// Largest record payload (a content chunk plus slack).
pub const MAX_RECORD: usize = 128 * 1024;
pub const FRAME: usize = 8;

pub mod notify {
    pub const SUCCESS: u8 = 1;
    pub const FAILURE: u8 = 2;
    pub const DELAY: u8 = 4;
    pub const NEVER: u8 = 8;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub version: u16,
    pub queue_id: String,
    /// Arrival, microseconds since the epoch.
    pub arrival_us: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sender {
    pub address: String,
    /// DSN RET: 0 unset, 1 FULL, 2 HDRS.
    pub ret: u8,
    pub envid: String,
    pub smtputf8: bool,
    /// BODY=8BITMIME (or BINARYMIME) was declared.
    pub body_8bit: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    pub name: String,
    pub addr: String,
    pub helo: String,
    pub proto: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub address: String,
    /// DSN ORCPT as given (`rfc822;addr`), or empty.
    pub orcpt: String,
    /// DSN NOTIFY bits (see [`notify`]); 0 means not specified.
    pub notify: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    Header(Header),
    Sender(Sender),
    Client(Client),
    Recipient(Recipient),
    /// A piece of the message (RFC 5322, CRLF line endings). Postcard writes
    /// a byte string exactly as it writes a sequence of u8 (a varint length,
    /// then the bytes), so files are the same either way; as a byte string it
    /// is read with one copy instead of one visit per byte.
    Content(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Written after the last content record.
    EndOfContent {
        size: u64,
        nrcpt: u32,
        message_id: String,
    },
    /// Appended by the broker: the message is durable and visible.
    Commit {
        at_us: u64,
    },
    // State records, appended on the queue manager's instruction. New
    // variants go at the end: postcard numbers them in order.
    /// A recipient reached a final state (delivered, or bounced with its
    /// DSN queued): it is never tried again.
    RcptDone {
        index: u32,
    },
    /// A recipient was deferred; `reason` is what `mailq` shows.
    RcptDeferred {
        index: u32,
        reason: String,
    },
    /// The next delivery attempt of the message, after a deferral.
    NextAttempt {
        at_us: u64,
        attempts: u32,
    },
    /// Put on hold (true) or released (false).
    Hold(bool),
    /// A delayed-mail warning was sent.
    DelayWarned,
    /// Written by the broker when the message leaves the queue (delivered,
    /// bounced or deleted), before the file is emptied for reuse in the
    /// background: a file that ends with this is free.
    Removed,
    /// Written by cleanup after the envelope: the submitter asked for a
    /// report of the first delivery attempt (`sendmail -v`).
    TraceRequested,
    /// That report was queued.
    TraceSent,
    /// A recipient was deferred, with the RFC 3463 status of the deferral
    /// (for a later delay warning or expiry notice); supersedes
    /// `RcptDeferred`, which older files hold.
    RcptDeferredStatus {
        index: u32,
        dsn: String,
        reason: String,
    },
    /// Written by cleanup after the envelope (version 2): the message came
    /// from a source whose mail may be DKIM-signed (mynetworks, a SASL
    /// login, a local submission, Postern's own notices, or a forward of
    /// such a message).
    Signable,
    /// Written by cleanup after the envelope (version 3): the client sent
    /// MAIL FROM ... REQUIRETLS (RFC 8689).
    RequireTls,
}

/// Frames one record.
pub fn encode(rec: &Record) -> Vec<u8> {
    let payload = postcard::to_allocvec(rec).expect("records always serialize");
    let mut out = Vec::with_capacity(FRAME + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// How a file's record sequence ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    /// Ended exactly at a record boundary.
    Clean,
    /// A partial record at `offset` (a crash mid-write).
    Torn { offset: u64 },
    /// A complete-looking record at `offset` that fails its checksum or
    /// does not decode.
    Corrupt { offset: u64, why: String },
}

/// Decodes records from `buf`, stopping at the first bad one.
pub fn decode_all(buf: &[u8]) -> (Vec<(u64, Record)>, Tail) {
    let mut out = Vec::new();
    let mut pos = 0usize;
    loop {
        if pos == buf.len() {
            return (out, Tail::Clean);
        }
        let offset = pos as u64;
        if buf.len() - pos < FRAME {
            return (out, Tail::Torn { offset });
        }
        let len = u32::from_le_bytes(buf[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(buf[pos + 4..pos + 8].try_into().expect("4 bytes"));
        if len > MAX_RECORD {
            return (
                out,
                Tail::Corrupt {
                    offset,
                    why: format!("record length {len}"),
                },
            );
        }
        if buf.len() - pos - FRAME < len {
            return (out, Tail::Torn { offset });
        }
        let payload = &buf[pos + FRAME..pos + FRAME + len];
        if crc32fast::hash(payload) != crc {
            return (
                out,
                Tail::Corrupt {
                    offset,
                    why: "checksum mismatch".into(),
                },
            );
        }
        match postcard::from_bytes::<Record>(payload) {
            Ok(r) => out.push((offset, r)),
            Err(e) => {
                return (
                    out,
                    Tail::Corrupt {
                        offset,
                        why: format!("undecodable record: {e}"),
                    },
                );
            }
        }
        pos += FRAME + len;
    }
}

/// A message as far as its records go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub header: Option<Header>,
    pub sender: Option<Sender>,
    pub client: Option<Client>,
    pub recipients: Vec<Recipient>,
    pub size: u64,
    pub message_id: String,
    pub content_complete: bool,
    pub committed: bool,
    /// Recipients (by index) in a final state.
    pub done: Vec<u32>,
    /// The last deferral reason per recipient index.
    pub deferred: Vec<(u32, String)>,
    /// The last deferral's status per recipient index, where recorded.
    pub deferred_dsn: Vec<(u32, String)>,
    pub next_attempt_us: u64,
    pub attempts: u32,
    pub hold: bool,
    pub delay_warned: bool,
    /// A first-attempt report was asked for and not yet sent.
    pub trace: bool,
    /// The message may be DKIM-signed (a `Signable` record).
    pub signable: bool,
    /// REQUIRETLS was asked for (a `RequireTls` record).
    pub requiretls: bool,
    pub removed: bool,
    /// Byte length of the valid record prefix.
    pub valid_len: u64,
}

/// Summarizes a record sequence without keeping the content.
pub fn summarize(records: &[(u64, Record)], end: u64) -> Summary {
    let mut s = Summary {
        valid_len: end,
        ..Summary::default()
    };
    for (_, r) in records {
        match r {
            Record::Header(h) => s.header = Some(h.clone()),
            Record::Sender(x) => s.sender = Some(x.clone()),
            Record::Client(c) => s.client = Some(c.clone()),
            Record::Signable => s.signable = true,
            Record::RequireTls => s.requiretls = true,
            Record::Recipient(r) => s.recipients.push(r.clone()),
            Record::Content(_) => {}
            Record::EndOfContent {
                size, message_id, ..
            } => {
                s.size = *size;
                s.message_id = message_id.clone();
                s.content_complete = true;
            }
            Record::Commit { .. } => s.committed = true,
            Record::RcptDone { index } => {
                if !s.done.contains(index) {
                    s.done.push(*index);
                }
                s.deferred.retain(|(i, _)| i != index);
                s.deferred_dsn.retain(|(i, _)| i != index);
            }
            Record::RcptDeferredStatus { index, dsn, reason } => {
                s.deferred.retain(|(i, _)| i != index);
                s.deferred.push((*index, reason.clone()));
                s.deferred_dsn.retain(|(i, _)| i != index);
                s.deferred_dsn.push((*index, dsn.clone()));
            }
            Record::RcptDeferred { index, reason } => {
                s.deferred.retain(|(i, _)| i != index);
                s.deferred.push((*index, reason.clone()));
            }
            Record::NextAttempt { at_us, attempts } => {
                s.next_attempt_us = *at_us;
                s.attempts = *attempts;
            }
            Record::Hold(h) => s.hold = *h,
            Record::DelayWarned => s.delay_warned = true,
            Record::TraceRequested => s.trace = true,
            Record::TraceSent => s.trace = false,
            Record::Removed => s.removed = true,
        }
    }
    s
}

impl Summary {
    /// Every recipient has reached a final state: the file can go.
    pub fn all_done(&self) -> bool {
        self.removed
            || self.committed && (0..self.recipients.len() as u32).all(|i| self.done.contains(&i))
    }
}

/// The message content (concatenated Content records).
pub fn content(records: &[(u64, Record)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (_, r) in records {
        if let Record::Content(c) = r {
            out.extend_from_slice(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record> {
        vec![
            Record::Header(Header {
                version: VERSION,
                queue_id: "4Q2zX".into(),
                arrival_us: 1,
            }),
            Record::Sender(Sender {
                address: "a@b".into(),
                ret: 0,
                envid: String::new(),
                smtputf8: false,
                body_8bit: false,
            }),
            Record::Recipient(Recipient {
                address: "c@d".into(),
                orcpt: String::new(),
                notify: 0,
            }),
            Record::Content(b"Subject: x\r\n\r\nbody\r\n".to_vec()),
            Record::EndOfContent {
                size: 20,
                nrcpt: 1,
                message_id: "<m@x>".into(),
            },
            Record::Commit { at_us: 2 },
            Record::RcptDeferred {
                index: 0,
                reason: "connect to mx: refused".into(),
            },
            Record::RcptDeferredStatus {
                index: 0,
                dsn: "4.4.1".into(),
                reason: "connect to mx: refused".into(),
            },
            Record::NextAttempt {
                at_us: 3,
                attempts: 1,
            },
            Record::Hold(true),
        ]
    }

    /// Content was once written as a plain sequence of u8; files from then
    /// must read the same, and new files must be byte-identical.
    #[test]
    fn content_bytes_are_the_same_as_a_sequence_of_u8() {
        #[derive(Serialize)]
        enum Old {
            _Header,
            _Sender,
            _Client,
            _Recipient,
            Content(Vec<u8>),
        }
        let body: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        let old = postcard::to_allocvec(&Old::Content(body.clone())).unwrap();
        let new = postcard::to_allocvec(&Record::Content(body.clone())).unwrap();
        assert_eq!(old, new);
        let back: Record = postcard::from_bytes(&old).unwrap();
        assert_eq!(back, Record::Content(body));
    }

    #[test]
    fn round_trip_and_summary() {
        let bytes: Vec<u8> = sample().iter().flat_map(encode).collect();
        let (recs, tail) = decode_all(&bytes);
        assert_eq!(tail, Tail::Clean);
        assert_eq!(
            recs.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(),
            sample()
        );
        let s = summarize(&recs, bytes.len() as u64);
        assert!(s.committed && s.content_complete && s.hold);
        assert_eq!(s.recipients.len(), 1);
        assert_eq!(s.deferred, vec![(0, "connect to mx: refused".to_string())]);
        assert!(!s.all_done());
        let mut more = bytes.clone();
        more.extend(encode(&Record::RcptDone { index: 0 }));
        let (recs, _) = decode_all(&more);
        let s = summarize(&recs, more.len() as u64);
        assert!(s.all_done() && s.deferred.is_empty());
        assert_eq!(content(&recs), b"Subject: x\r\n\r\nbody\r\n");
    }

    #[test]
    fn every_truncation_is_torn_or_clean_never_a_wrong_record() {
        let records = sample();
        let bytes: Vec<u8> = records.iter().flat_map(encode).collect();
        let commit_at = records
            .iter()
            .position(|r| matches!(r, Record::Commit { .. }))
            .unwrap();
        let commit_end: usize = records[..=commit_at].iter().map(|r| encode(r).len()).sum();
        for cut in 0..bytes.len() {
            let (recs, tail) = decode_all(&bytes[..cut]);
            assert!(
                matches!(tail, Tail::Torn { .. } | Tail::Clean),
                "cut {cut}: {tail:?}"
            );
            let s = summarize(&recs, 0);
            // Committed exactly when the whole commit record survived.
            assert_eq!(s.committed, cut >= commit_end, "cut {cut}");
        }
    }

    #[test]
    fn flipped_bit_is_corrupt() {
        let mut bytes: Vec<u8> = sample().iter().flat_map(encode).collect();
        // Inside the content record's payload, not a length field.
        let at = bytes.windows(4).position(|w| w == b"body").unwrap();
        bytes[at] ^= 0x40;
        let (_, tail) = decode_all(&bytes);
        assert!(matches!(tail, Tail::Corrupt { .. }), "{tail:?}");
    }
}
