//! Bounded frames: `[u32 LE length][Cap'n Proto message]`, one per SEQPACKET
//! record. Every limit is checked before anything is allocated for the
//! peer's claims, and every field is checked on decode.
use capnp::message::{Builder, HeapAllocator, Reader, ReaderOptions};
use capnp::serialize::NoAllocBufferSegments;

/// Why a frame was refused. From a sibling daemon this ends the receiving
/// daemon (the master restarts it); from a client socket it drops the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("frame of {len} bytes exceeds this channel's limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("frame shorter than its header")]
    Short,
    #[error("frame header says {claimed} bytes but {actual} arrived")]
    LengthMismatch { claimed: usize, actual: usize },
    #[error("malformed message: {0}")]
    Capnp(String),
    #[error("field {field}: {why}")]
    Field { field: &'static str, why: String },
    #[error("field {field}: {len} entries exceed the limit of {max}")]
    TooMany {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("field {field}: {value} is outside {min}..={max}")]
    Range {
        field: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
    #[error("protocol version {got}, expected {want}")]
    Version { got: u32, want: u32 },
    #[error("edge \"{got}\", expected \"{want}\"")]
    WrongEdge { got: String, want: &'static str },
    #[error("unexpected message: {0}")]
    Unexpected(&'static str),
    #[error("{got} descriptors beside the frame, expected {want}")]
    FdCount { got: usize, want: usize },
    #[error("more descriptors beside the frame than any frame may carry")]
    FdTruncated,
}

impl From<capnp::Error> for Violation {
    fn from(e: capnp::Error) -> Self {
        Violation::Capnp(e.to_string())
    }
}

impl From<capnp::NotInSchema> for Violation {
    fn from(e: capnp::NotInSchema) -> Self {
        Violation::Capnp(format!("unknown union member {}", e.0))
    }
}

pub const HEADER: usize = 4;

/// Reader limits: small traversal budget (a frame cannot make us walk more
/// words than it holds, times a small factor) and shallow nesting.
pub fn reader_options(max_frame: usize) -> ReaderOptions {
    let mut o = ReaderOptions::new();
    o.traversal_limit_in_words(Some((max_frame / 8) * 4 + 64))
        .nesting_limit(16);
    o
}

pub fn builder() -> Builder<HeapAllocator> {
    Builder::new(HeapAllocator::new().first_segment_words(128))
}

/// Serializes a message with its length header.
pub fn finish(msg: &Builder<HeapAllocator>) -> Vec<u8> {
    let words = capnp::serialize::write_message_to_words(msg);
    let mut out = Vec::with_capacity(HEADER + words.len());
    out.extend_from_slice(&(words.len() as u32).to_le_bytes());
    out.extend_from_slice(&words);
    out
}

/// Checks a received frame's header against the channel's limit and opens
/// the message with bounded reader options.
pub fn open(
    frame: &[u8],
    max_frame: usize,
) -> Result<Reader<NoAllocBufferSegments<&[u8]>>, Violation> {
    if frame.len() < HEADER {
        return Err(Violation::Short);
    }
    let claimed = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    if claimed > max_frame {
        return Err(Violation::TooLarge {
            len: claimed,
            max: max_frame,
        });
    }
    let body = &frame[HEADER..];
    if claimed != body.len() {
        return Err(Violation::LengthMismatch {
            claimed,
            actual: body.len(),
        });
    }
    let mut slice = body;
    let reader = capnp::serialize::read_message_from_flat_slice_no_alloc(
        &mut slice,
        reader_options(max_frame),
    )?;
    if !slice.is_empty() {
        return Err(Violation::Capnp(format!(
            "{} bytes after the message",
            slice.len()
        )));
    }
    Ok(reader)
}

/// A checked text field: valid UTF-8, at most `max` bytes, no control
/// characters (so nothing can smuggle a line break into a log or header).
pub fn text(
    r: capnp::Result<capnp::text::Reader<'_>>,
    field: &'static str,
    max: usize,
) -> Result<String, Violation> {
    let r = r?;
    let bytes = r.as_bytes();
    if bytes.len() > max {
        return Err(Violation::Field {
            field,
            why: format!("{} bytes exceed the limit of {max}", bytes.len()),
        });
    }
    let s = std::str::from_utf8(bytes).map_err(|_| Violation::Field {
        field,
        why: "not valid UTF-8".into(),
    })?;
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(Violation::Field {
            field,
            why: format!("control character U+{:04X}", c as u32),
        });
    }
    Ok(s.to_string())
}

/// A checked binary field (message content): only its length is capped.
pub fn data(
    r: capnp::Result<capnp::data::Reader<'_>>,
    field: &'static str,
    max: usize,
) -> Result<Vec<u8>, Violation> {
    let r = r?;
    if r.len() > max {
        return Err(Violation::Field {
            field,
            why: format!("{} bytes exceed the limit of {max}", r.len()),
        });
    }
    Ok(r.to_vec())
}

/// An RFC 3463 status code (`class.subject.detail`, digits only).
pub fn status_code(s: String, field: &'static str) -> Result<String, Violation> {
    let parts = s.split('.');
    if parts.clone().count() != 3
        || !parts
            .into_iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|c| c.is_ascii_digit()))
    {
        return Err(Violation::Field {
            field,
            why: format!("\"{s}\" is not a status code"),
        });
    }
    Ok(s)
}

pub fn list_len(len: u32, field: &'static str, max: usize) -> Result<usize, Violation> {
    let len = len as usize;
    if len > max {
        return Err(Violation::TooMany { field, len, max });
    }
    Ok(len)
}

pub fn range(value: u64, field: &'static str, min: u64, max: u64) -> Result<u64, Violation> {
    if value < min || value > max {
        return Err(Violation::Range {
            field,
            value,
            min,
            max,
        });
    }
    Ok(value)
}

/// Sets a text field, truncating at a char boundary to `max` bytes so an
/// honest sender never produces a frame its peer must refuse.
pub fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
