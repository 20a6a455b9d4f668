//! The Milter protocol (libmilter's, version 6), sans-IO: the commands an
//! MTA sends, and a bounded reader of what a filter answers.
//!
//! Every packet is a 4-byte big-endian length, a command byte, and data.
//! A filter is an untrusted peer, so [`read_reply`] checks everything
//! before anything is used:
//! - a packet longer than [`MAX_PACKET`] (or empty) is refused before its
//!   data is waited for;
//! - strings are NUL-terminated and UTF-8 (addresses, header names and
//!   values), without control characters except a header value's folding
//!   (a line break followed by a space or tab);
//! - a header name is RFC 5322's: printable ASCII without `:`;
//! - `SMFIR_REPLYCODE` is a whole SMTP reply: 4xx or 5xx, every line with
//!   the same code and `-` on all lines but the last, an enhanced status
//!   code (when given) of the same class, at most [`MAX_REPLY_LINES`]
//!   lines of at most [`MAX_REPLY_LINE`] bytes (Postfix 3.11's 2026 fix
//!   guards an overwrite in its soft_bounce rewrite of such a reply; here
//!   the reply is parsed into a value before anything looks at it);
//! - a reply the protocol does not know, or data a reply cannot have, is
//!   an error; the caller applies the Milter's default action and closes
//!   the connection.

/// The protocol version Postern speaks.
pub const VERSION: u32 = 6;
/// Longest packet a filter may send (a body replacement chunk is at most
/// 64 KiB, as libmilter writes them).
pub const MAX_PACKET: usize = 65536 + 1024;
/// Longest body chunk Postern sends (libmilter's MILTER_CHUNK_SIZE).
pub const BODY_CHUNK: usize = 65535;
/// Longest string field of a reply (an address, a header name or value,
/// a quarantine reason).
pub const MAX_FIELD: usize = 16384;
/// Most lines, and longest line, of an SMTP reply from a filter.
pub const MAX_REPLY_LINES: usize = 16;
pub const MAX_REPLY_LINE: usize = 512;

/// The actions a filter may ask for (SMFIF_*).
pub mod action {
    pub const ADDHDRS: u32 = 0x01;
    pub const CHGBODY: u32 = 0x02;
    pub const ADDRCPT: u32 = 0x04;
    pub const DELRCPT: u32 = 0x08;
    pub const CHGHDRS: u32 = 0x10;
    pub const QUARANTINE: u32 = 0x20;
    pub const CHGFROM: u32 = 0x40;
    pub const ADDRCPT_PAR: u32 = 0x80;
    pub const SETSYMLIST: u32 = 0x100;
    /// Every action Postern carries out.
    pub const ALL: u32 = 0x1ff;
}

/// The protocol steps a filter may skip or not answer (SMFIP_*).
pub mod step {
    pub const NOCONNECT: u32 = 0x1;
    pub const NOHELO: u32 = 0x2;
    pub const NOMAIL: u32 = 0x4;
    pub const NORCPT: u32 = 0x8;
    pub const NOBODY: u32 = 0x10;
    pub const NOHDRS: u32 = 0x20;
    pub const NOEOH: u32 = 0x40;
    pub const NR_HDR: u32 = 0x80;
    pub const NOUNKNOWN: u32 = 0x100;
    pub const NODATA: u32 = 0x200;
    pub const SKIP: u32 = 0x400;
    pub const RCPT_REJ: u32 = 0x800;
    pub const NR_CONN: u32 = 0x1000;
    pub const NR_HELO: u32 = 0x2000;
    pub const NR_MAIL: u32 = 0x4000;
    pub const NR_RCPT: u32 = 0x8000;
    pub const NR_DATA: u32 = 0x10000;
    pub const NR_UNKN: u32 = 0x20000;
    pub const NR_EOH: u32 = 0x40000;
    pub const NR_BODY: u32 = 0x80000;
    pub const HDR_LEADSPC: u32 = 0x100000;
    /// Every step flag Postern honours.
    pub const ALL: u32 = 0x1fffff;
}

/// The stages macros are sent at (the macro lists of SMFIR_SETSYMLIST).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Connect = 0,
    Helo = 1,
    Mail = 2,
    Rcpt = 3,
    Data = 4,
    EndOfMessage = 5,
    EndOfHeaders = 6,
}

impl Stage {
    pub const ALL: [Stage; 7] = [
        Stage::Connect,
        Stage::Helo,
        Stage::Mail,
        Stage::Rcpt,
        Stage::Data,
        Stage::EndOfMessage,
        Stage::EndOfHeaders,
    ];

    /// The command byte whose macros these are.
    pub fn command(self) -> u8 {
        match self {
            Stage::Connect => b'C',
            Stage::Helo => b'H',
            Stage::Mail => b'M',
            Stage::Rcpt => b'R',
            Stage::Data => b'T',
            Stage::EndOfMessage => b'E',
            Stage::EndOfHeaders => b'N',
        }
    }

    fn from_u32(n: u32) -> Option<Stage> {
        Stage::ALL.get(usize::try_from(n).ok()?).copied()
    }
}

/// The client's address family at connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Family {
    Inet4(std::net::Ipv4Addr),
    Inet6(std::net::Ipv6Addr),
    /// A local submission: no address.
    Unknown,
}

/// What the MTA sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    OptNeg {
        version: u32,
        actions: u32,
        protocol: u32,
    },
    /// Macros for the command that follows.
    Macros {
        command: u8,
        pairs: Vec<(String, String)>,
    },
    Connect {
        host: String,
        family: Family,
        port: u16,
    },
    Helo(String),
    /// The sender in `<>`, then the ESMTP parameters.
    Mail(Vec<String>),
    Rcpt(Vec<String>),
    Data,
    Header {
        name: String,
        value: String,
    },
    EndOfHeaders,
    Body(Vec<u8>),
    EndOfMessage,
    Abort,
    Quit,
    Unknown(String),
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // A NUL would end the field early: it cannot be sent.
    out.extend(s.bytes().filter(|b| *b != 0));
    out.push(0);
}

impl Command {
    /// The packet.
    pub fn encode(&self) -> Vec<u8> {
        let mut d = Vec::with_capacity(64);
        let cmd = match self {
            Command::OptNeg {
                version,
                actions,
                protocol,
            } => {
                d.extend_from_slice(&version.to_be_bytes());
                d.extend_from_slice(&actions.to_be_bytes());
                d.extend_from_slice(&protocol.to_be_bytes());
                b'O'
            }
            Command::Macros { command, pairs } => {
                d.push(*command);
                for (n, v) in pairs {
                    put_str(&mut d, n);
                    put_str(&mut d, v);
                }
                b'D'
            }
            Command::Connect { host, family, port } => {
                put_str(&mut d, host);
                match family {
                    Family::Inet4(a) => {
                        d.push(b'4');
                        d.extend_from_slice(&port.to_be_bytes());
                        put_str(&mut d, &a.to_string());
                    }
                    Family::Inet6(a) => {
                        d.push(b'6');
                        d.extend_from_slice(&port.to_be_bytes());
                        put_str(&mut d, &a.to_string());
                    }
                    Family::Unknown => d.push(b'U'),
                }
                b'C'
            }
            Command::Helo(h) => {
                put_str(&mut d, h);
                b'H'
            }
            Command::Mail(args) | Command::Rcpt(args) => {
                for a in args {
                    put_str(&mut d, a);
                }
                if matches!(self, Command::Mail(_)) {
                    b'M'
                } else {
                    b'R'
                }
            }
            Command::Data => b'T',
            Command::Header { name, value } => {
                put_str(&mut d, name);
                put_str(&mut d, value);
                b'L'
            }
            Command::EndOfHeaders => b'N',
            Command::Body(chunk) => {
                d.extend_from_slice(&chunk[..chunk.len().min(BODY_CHUNK)]);
                b'B'
            }
            Command::EndOfMessage => b'E',
            Command::Abort => b'A',
            Command::Quit => b'Q',
            Command::Unknown(line) => {
                put_str(&mut d, line);
                b'U'
            }
        };
        packet(cmd, &d)
    }
}

fn packet(cmd: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + data.len());
    out.extend_from_slice(&((data.len() + 1) as u32).to_be_bytes());
    out.push(cmd);
    out.extend_from_slice(data);
    out
}

/// A raw header field (`Name: value\r\n`, continuation lines included)
/// as its value goes to a Milter in SMFIC_HEADER: what follows the colon,
/// without the leading white space unless the filter negotiated
/// SMFIP_HDR_LEADSPC, folded lines joined by a bare `\n` (as Postfix sends
/// them), and no final line break.
pub fn sent_header_value(raw: &[u8], leadspc: bool) -> String {
    let after = raw
        .iter()
        .position(|&b| b == b':')
        .map_or(&raw[raw.len()..], |i| &raw[i + 1..]);
    let s = String::from_utf8_lossy(after);
    let s = s.strip_suffix('\n').unwrap_or(&s);
    let s = s.strip_suffix('\r').unwrap_or(s);
    let s = s.replace("\r\n", "\n");
    if leadspc {
        s
    } else {
        s.trim_start_matches([' ', '\t']).to_string()
    }
}

/// An SMTP reply a filter gave (SMFIR_REPLYCODE), checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpReply {
    pub code: u16,
    /// The enhanced status code of the first line, when it has one.
    pub enhanced: Option<String>,
    /// Each line's text, after the code (and the enhanced code), with
    /// `%%` turned into `%`.
    pub lines: Vec<String>,
}

impl SmtpReply {
    /// As the filter would write it (for tests and the fuzz round trip).
    pub fn wire(&self) -> String {
        let n = self.lines.len();
        self.lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let sep = if i + 1 == n { ' ' } else { '-' };
                let enh = match &self.enhanced {
                    Some(e) => format!("{e} "),
                    None => String::new(),
                };
                format!("{}{sep}{enh}{}", self.code, l.replace('%', "%%"))
            })
            .collect::<Vec<_>>()
            .join("\r\n")
    }
}

/// What a filter answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    OptNeg {
        version: u32,
        actions: u32,
        protocol: u32,
        /// SMFIR_SETSYMLIST: the macros the filter wants at each stage.
        macros: Vec<(Stage, String)>,
    },
    Accept,
    Continue,
    Discard,
    Reject,
    Tempfail,
    ReplyCode(SmtpReply),
    Quarantine(String),
    Skip,
    Progress,
    ConnFail,
    Shutdown,
    /// A change to the message (end of message only).
    Edit(Edit),
}

/// Why a filter's packet cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MilterError {
    /// Length 0, or more than [`MAX_PACKET`].
    BadLength(u32),
    /// A reply code the protocol does not have.
    UnknownReply(u8),
    /// The data does not fit the reply.
    Malformed(&'static str),
    /// SMFIR_REPLYCODE that is not a valid 4xx or 5xx SMTP reply.
    BadSmtpReply,
}

impl std::fmt::Display for MilterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MilterError::BadLength(n) => write!(f, "bad packet length {n}"),
            MilterError::UnknownReply(c) => write!(f, "unknown reply code 0x{c:02x}"),
            MilterError::Malformed(what) => write!(f, "malformed {what}"),
            MilterError::BadSmtpReply => f.write_str("malformed SMTP reply"),
        }
    }
}

/// Reads one reply from the front of `buf`: None until the whole packet
/// is there; the reply and the bytes it took once it is; an error as
/// soon as the length or the packet is wrong.
pub fn read_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, MilterError> {
    let Some(head) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let n = len as usize;
    if n == 0 || n > MAX_PACKET {
        return Err(MilterError::BadLength(len));
    }
    let Some(body) = buf.get(4..4 + n) else {
        return Ok(None);
    };
    let reply = parse(body[0], &body[1..])?;
    Ok(Some((reply, 4 + n)))
}

/// Fields of a packet's data, read front to back.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn u32(&mut self, what: &'static str) -> Result<u32, MilterError> {
        let b = self.rest.get(..4).ok_or(MilterError::Malformed(what))?;
        self.rest = &self.rest[4..];
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A NUL-terminated UTF-8 string.
    fn string(&mut self, what: &'static str) -> Result<&'a str, MilterError> {
        let end = self
            .rest
            .iter()
            .position(|b| *b == 0)
            .ok_or(MilterError::Malformed(what))?;
        let s = std::str::from_utf8(&self.rest[..end]).map_err(|_| MilterError::Malformed(what))?;
        if s.len() > MAX_FIELD {
            return Err(MilterError::Malformed(what));
        }
        self.rest = &self.rest[end + 1..];
        Ok(s)
    }

    fn done(&self, what: &'static str) -> Result<(), MilterError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(MilterError::Malformed(what))
        }
    }
}

/// A string without control characters (addresses, reasons, macro names).
fn plain(s: &str, what: &'static str) -> Result<String, MilterError> {
    if s.chars().any(char::is_control) {
        return Err(MilterError::Malformed(what));
    }
    Ok(s.to_string())
}

/// A header name: printable ASCII, no colon, not empty.
fn header_name(s: &str) -> Result<String, MilterError> {
    if s.is_empty() || !s.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
        return Err(MilterError::Malformed("header name"));
    }
    Ok(s.to_string())
}

/// A header value: line breaks only as folding (CRLF or LF, then a space
/// or tab), no other control character but tab. Folding is kept as LF.
fn header_value(s: &str) -> Result<String, MilterError> {
    let bad = MilterError::Malformed("header value");
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    for (j, c) in s.char_indices() {
        if j < i {
            continue;
        }
        match c {
            '\r' if b.get(j + 1) == Some(&b'\n') => {
                if !matches!(b.get(j + 2), Some(b' ' | b'\t')) {
                    return Err(bad);
                }
                out.push('\n');
                i = j + 2;
            }
            '\n' => {
                if !matches!(b.get(j + 1), Some(b' ' | b'\t')) {
                    return Err(bad);
                }
                out.push('\n');
                i = j + 1;
            }
            '\t' => out.push(c),
            c if c.is_control() => return Err(bad),
            c => out.push(c),
        }
    }
    Ok(out)
}

fn parse(cmd: u8, data: &[u8]) -> Result<Reply, MilterError> {
    let mut f = Fields { rest: data };
    let bare = |r: Reply| {
        if data.is_empty() {
            Ok(r)
        } else {
            Err(MilterError::Malformed("reply with data"))
        }
    };
    let r = match cmd {
        b'O' => {
            let version = f.u32("option negotiation")?;
            let actions = f.u32("option negotiation")?;
            let protocol = f.u32("option negotiation")?;
            let mut macros = Vec::new();
            while !f.rest.is_empty() {
                let stage = Stage::from_u32(f.u32("macro list")?)
                    .ok_or(MilterError::Malformed("macro list stage"))?;
                let list = plain(f.string("macro list")?, "macro list")?;
                if macros.iter().any(|(s, _)| *s == stage) || macros.len() >= Stage::ALL.len() {
                    return Err(MilterError::Malformed("macro list"));
                }
                macros.push((stage, list));
            }
            return Ok(Reply::OptNeg {
                version,
                actions,
                protocol,
                macros,
            });
        }
        b'a' => return bare(Reply::Accept),
        b'c' => return bare(Reply::Continue),
        b'd' => return bare(Reply::Discard),
        b'r' => return bare(Reply::Reject),
        b't' => return bare(Reply::Tempfail),
        b's' => return bare(Reply::Skip),
        b'p' => return bare(Reply::Progress),
        b'f' => return bare(Reply::ConnFail),
        b'4' => return bare(Reply::Shutdown),
        b'y' => {
            let text = f.string("reply code")?;
            Reply::ReplyCode(smtp_reply(text)?)
        }
        b'q' => Reply::Quarantine(plain(f.string("quarantine reason")?, "quarantine reason")?),
        b'+' => Reply::Edit(Edit::AddRcpt(
            plain(f.string("recipient")?, "recipient")?,
            String::new(),
        )),
        b'-' => Reply::Edit(Edit::DelRcpt(plain(f.string("recipient")?, "recipient")?)),
        b'2' => Reply::Edit(Edit::AddRcpt(
            plain(f.string("recipient")?, "recipient")?,
            plain(f.string("recipient parameters")?, "recipient parameters")?,
        )),
        b'e' => {
            let from = plain(f.string("sender")?, "sender")?;
            // The parameters are optional.
            let args = if f.rest.is_empty() {
                String::new()
            } else {
                plain(f.string("sender parameters")?, "sender parameters")?
            };
            Reply::Edit(Edit::ChangeFrom(from, args))
        }
        b'b' => {
            // Raw body bytes, the whole packet.
            return Ok(Reply::Edit(Edit::ReplaceBody(data.to_vec())));
        }
        b'h' => Reply::Edit(Edit::AddHeader {
            name: header_name(f.string("header name")?)?,
            value: header_value(f.string("header value")?)?,
        }),
        b'i' | b'm' => {
            let index = f.u32("header index")?;
            let name = header_name(f.string("header name")?)?;
            let value = header_value(f.string("header value")?)?;
            Reply::Edit(if cmd == b'i' {
                Edit::InsertHeader { index, name, value }
            } else {
                Edit::ChangeHeader { index, name, value }
            })
        }
        other => return Err(MilterError::UnknownReply(other)),
    };
    f.done("reply with trailing data")?;
    Ok(r)
}

/// Postfix's milter8_valid_smtp_reply, and more: one code on every line.
fn smtp_reply(text: &str) -> Result<SmtpReply, MilterError> {
    let bad = MilterError::BadSmtpReply;
    let raw: Vec<&str> = text.split("\r\n").collect();
    if raw.is_empty() || raw.len() > MAX_REPLY_LINES {
        return Err(bad);
    }
    let mut code: Option<&str> = None;
    let mut enhanced = None;
    let mut lines = Vec::with_capacity(raw.len());
    for (i, line) in raw.iter().enumerate() {
        let b = line.as_bytes();
        let last = i + 1 == raw.len();
        if b.len() < 4
            || b.len() > MAX_REPLY_LINE
            || !matches!(b[0], b'4' | b'5')
            || !b[1].is_ascii_digit()
            || !b[2].is_ascii_digit()
            || b[3] != if last { b' ' } else { b'-' }
            || line.chars().any(char::is_control)
        {
            return Err(bad);
        }
        match code {
            None => code = Some(&line[..3]),
            Some(c) if c != &line[..3] => return Err(bad),
            Some(_) => {}
        }
        let mut rest = &line[4..];
        let (dsn, after) = split_enhanced(rest);
        // Every line carries the first line's enhanced code, or none does
        // (libmilter's smfi_setmlreply writes one code on every line).
        if i == 0 {
            enhanced = dsn.map(str::to_string);
        } else if dsn != enhanced.as_deref() {
            return Err(bad);
        }
        if let Some(d) = dsn {
            if d.as_bytes()[0] != b[0] {
                return Err(bad);
            }
            rest = after;
        } else if rest
            .as_bytes()
            .first()
            .is_some_and(|d| d.is_ascii_digit() && *d != b[0])
        {
            // Text that starts like an enhanced code of another class.
            return Err(bad);
        }
        lines.push(unescape(rest));
    }
    let code = code
        .and_then(|c| c.parse().ok())
        .ok_or(MilterError::BadSmtpReply)?;
    Ok(SmtpReply {
        code,
        enhanced,
        lines,
    })
}

/// An RFC 3463 status code (`5.7.1`) at the start of `s`, followed by a
/// space or the end, and the text after it.
fn split_enhanced(s: &str) -> (Option<&str>, &str) {
    let end = s.find(' ').unwrap_or(s.len());
    let head = &s[..end];
    let parts: Vec<&str> = head.split('.').collect();
    let ok = parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && parts[1..]
            .iter()
            .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        (Some(head), s[end..].strip_prefix(' ').unwrap_or(""))
    } else {
        (None, s)
    }
}

/// `%%` is a literal `%` (libmilter's smfi_setreply escapes it).
fn unescape(s: &str) -> String {
    s.replace("%%", "%")
}

impl Reply {
    /// As a filter would send it (for tests, a test filter, and the fuzz
    /// round trip).
    pub fn encode(&self) -> Vec<u8> {
        let mut d = Vec::new();
        let cmd = match self {
            Reply::OptNeg {
                version,
                actions,
                protocol,
                macros,
            } => {
                d.extend_from_slice(&version.to_be_bytes());
                d.extend_from_slice(&actions.to_be_bytes());
                d.extend_from_slice(&protocol.to_be_bytes());
                for (s, list) in macros {
                    d.extend_from_slice(&(*s as u32).to_be_bytes());
                    put_str(&mut d, list);
                }
                b'O'
            }
            Reply::Accept => b'a',
            Reply::Continue => b'c',
            Reply::Discard => b'd',
            Reply::Reject => b'r',
            Reply::Tempfail => b't',
            Reply::Skip => b's',
            Reply::Progress => b'p',
            Reply::ConnFail => b'f',
            Reply::Shutdown => b'4',
            Reply::ReplyCode(r) => {
                put_str(&mut d, &r.wire());
                b'y'
            }
            Reply::Quarantine(s) => {
                put_str(&mut d, s);
                b'q'
            }
            Reply::Edit(e) => match e {
                Edit::AddRcpt(a, p) if p.is_empty() => {
                    put_str(&mut d, a);
                    b'+'
                }
                Edit::AddRcpt(a, p) => {
                    put_str(&mut d, a);
                    put_str(&mut d, p);
                    b'2'
                }
                Edit::DelRcpt(a) => {
                    put_str(&mut d, a);
                    b'-'
                }
                Edit::ChangeFrom(a, p) => {
                    put_str(&mut d, a);
                    put_str(&mut d, p);
                    b'e'
                }
                Edit::ReplaceBody(b) => {
                    d.extend_from_slice(b);
                    b'b'
                }
                Edit::AddHeader { name, value } => {
                    put_str(&mut d, name);
                    put_str(&mut d, value);
                    b'h'
                }
                Edit::InsertHeader { index, name, value }
                | Edit::ChangeHeader { index, name, value } => {
                    d.extend_from_slice(&index.to_be_bytes());
                    put_str(&mut d, name);
                    put_str(&mut d, value);
                    if matches!(e, Edit::InsertHeader { .. }) {
                        b'i'
                    } else {
                        b'm'
                    }
                }
            },
        };
        packet(cmd, &d)
    }

    /// The action a reply needs negotiated: changes to the message, and
    /// quarantine (allowed at the end of the message only).
    pub fn action_needed(&self) -> Option<u32> {
        Some(match self {
            Reply::Edit(e) => match e {
                Edit::AddRcpt(_, p) if p.is_empty() => action::ADDRCPT,
                Edit::AddRcpt(..) => action::ADDRCPT_PAR,
                Edit::DelRcpt(_) => action::DELRCPT,
                Edit::ReplaceBody(_) => action::CHGBODY,
                Edit::AddHeader { .. } | Edit::InsertHeader { .. } => action::ADDHDRS,
                Edit::ChangeHeader { .. } => action::CHGHDRS,
                Edit::ChangeFrom(..) => action::CHGFROM,
            },
            Reply::Quarantine(_) => action::QUARANTINE,
            _ => return None,
        })
    }
}

/// One step of the conversation: what the MTA just sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Connect,
    Helo,
    Mail,
    Rcpt,
    Data,
    Header,
    EndOfHeaders,
    Body,
    EndOfMessage,
    Unknown,
}

impl Step {
    /// The SMFIP_NO* flag that spares the filter this step, and the
    /// SMFIP_NR_* flag by which it says it will not answer it.
    fn flags(self) -> (u32, u32) {
        use step::*;
        match self {
            Step::Connect => (NOCONNECT, NR_CONN),
            Step::Helo => (NOHELO, NR_HELO),
            Step::Mail => (NOMAIL, NR_MAIL),
            Step::Rcpt => (NORCPT, NR_RCPT),
            Step::Data => (NODATA, NR_DATA),
            Step::Header => (NOHDRS, NR_HDR),
            Step::EndOfHeaders => (NOEOH, NR_EOH),
            Step::Body => (NOBODY, NR_BODY),
            Step::EndOfMessage => (0, 0),
            Step::Unknown => (NOUNKNOWN, NR_UNKN),
        }
    }

    /// Postfix's name for it in log lines (`milter-reject: RCPT from ...`).
    pub fn name(self) -> &'static str {
        match self {
            Step::Connect => "CONNECT",
            Step::Helo => "HELO",
            Step::Mail => "MAIL",
            Step::Rcpt => "RCPT",
            Step::Data => "DATA",
            Step::Header | Step::EndOfHeaders | Step::Body | Step::EndOfMessage => "END-OF-MESSAGE",
            Step::Unknown => "UNKNOWN",
        }
    }
}

/// What option negotiation settled with one filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub version: u32,
    /// The actions the filter may take (a subset of what was offered).
    pub actions: u32,
    /// The steps it skips or does not answer (SMFIP_*).
    pub protocol: u32,
    /// The macros it asked for, by stage (SMFIR_SETSYMLIST).
    pub macros: Vec<(Stage, String)>,
}

impl Negotiated {
    /// Checks a filter's answer to our offer (Postfix's milter8_connect):
    /// version 2 to 6, and no action or step flag it was not offered.
    pub fn from_reply(
        offered_actions: u32,
        offered_protocol: u32,
        r: Reply,
    ) -> Result<Negotiated, MilterError> {
        let Reply::OptNeg {
            version,
            actions,
            protocol,
            macros,
        } = r
        else {
            return Err(MilterError::Malformed("answer to option negotiation"));
        };
        if !(2..=VERSION).contains(&version) {
            return Err(MilterError::Malformed("protocol version"));
        }
        if actions & !offered_actions != 0 {
            return Err(MilterError::Malformed("actions not offered"));
        }
        if protocol & !offered_protocol != 0 {
            return Err(MilterError::Malformed("protocol steps not offered"));
        }
        if !macros.is_empty() && actions & action::SETSYMLIST == 0 {
            return Err(MilterError::Malformed("macro list without SETSYMLIST"));
        }
        Ok(Negotiated {
            version,
            actions,
            protocol,
            macros,
        })
    }

    /// Whether the filter wants this step at all.
    pub fn sends(&self, s: Step) -> bool {
        self.protocol & s.flags().0 == 0
    }

    /// Whether the filter answers this step (else the MTA goes on).
    pub fn answers(&self, s: Step) -> bool {
        self.protocol & s.flags().1 == 0
    }

    /// The macro names the filter wants at `stage`, if it said.
    pub fn macros_for(&self, stage: Stage) -> Option<Vec<&str>> {
        self.macros
            .iter()
            .find(|(s, _)| *s == stage)
            .map(|(_, l)| l.split_whitespace().collect())
    }
}

/// How a filter decided one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Continue,
    /// This filter is done: with the connection at CONNECT and HELO,
    /// with the message after that.
    Accept,
    /// Accept, then throw the message away.
    Discard,
    /// 5xx: the filter's own reply, or None for the default text.
    Reject(Option<SmtpReply>),
    /// 4xx, likewise.
    Tempfail(Option<SmtpReply>),
    /// No more body chunks (SMFIR_SKIP, negotiated).
    Skip,
    /// The filter gave up on the connection (SMFIR_CONN_FAIL, or the
    /// undocumented SMFIR_SHUTDOWN): a tempfail from here on.
    Shutdown,
}

/// A change to the message, asked for at the end of the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    AddRcpt(String, String),
    DelRcpt(String),
    ReplaceBody(Vec<u8>),
    AddHeader {
        name: String,
        value: String,
    },
    InsertHeader {
        index: u32,
        name: String,
        value: String,
    },
    ChangeHeader {
        index: u32,
        name: String,
        value: String,
    },
    ChangeFrom(String, String),
}

/// Most edits one filter may ask for in one message.
pub const MAX_EDITS: usize = 10_000;

/// Reads the replies to one step until one decides it: progress and
/// (at the end of the message) edits come before the decision.
#[derive(Debug)]
pub struct Collect {
    step: Step,
    actions: u32,
    protocol: u32,
    /// Most bytes a body replacement may have (message_size_limit).
    body_limit: u64,
    body_bytes: u64,
    pub edits: Vec<Edit>,
    /// SMFIR_QUARANTINE's reason (Postfix puts the message on hold).
    pub quarantine: Option<String>,
}

impl Collect {
    pub fn new(step: Step, n: &Negotiated, body_limit: u64) -> Collect {
        Collect {
            step,
            actions: n.actions,
            protocol: n.protocol,
            body_limit,
            body_bytes: 0,
            edits: Vec::new(),
            quarantine: None,
        }
    }

    /// One reply: Some(outcome) when it decides the step.
    pub fn reply(&mut self, r: Reply) -> Result<Option<Outcome>, MilterError> {
        let eom = self.step == Step::EndOfMessage;
        if let Some(needed) = r.action_needed() {
            if !eom {
                return Err(MilterError::Malformed(
                    "message change before the end of the message",
                ));
            }
            if self.actions & needed == 0 {
                return Err(MilterError::Malformed("message change not negotiated"));
            }
            if self.edits.len() >= MAX_EDITS {
                return Err(MilterError::Malformed("too many message changes"));
            }
        }
        let edit = match r {
            Reply::Progress => return Ok(None),
            Reply::Continue => return Ok(Some(Outcome::Continue)),
            Reply::Accept => return Ok(Some(Outcome::Accept)),
            Reply::Discard if self.step == Step::Connect => {
                return Err(MilterError::Malformed("discard at connect"));
            }
            Reply::Discard => return Ok(Some(Outcome::Discard)),
            Reply::Reject => return Ok(Some(Outcome::Reject(None))),
            Reply::Tempfail => return Ok(Some(Outcome::Tempfail(None))),
            Reply::ReplyCode(r) if r.code >= 500 => return Ok(Some(Outcome::Reject(Some(r)))),
            Reply::ReplyCode(r) => return Ok(Some(Outcome::Tempfail(Some(r)))),
            Reply::Skip if self.step == Step::Body && self.protocol & step::SKIP != 0 => {
                return Ok(Some(Outcome::Skip));
            }
            Reply::Skip => return Err(MilterError::Malformed("skip")),
            Reply::ConnFail | Reply::Shutdown => return Ok(Some(Outcome::Shutdown)),
            Reply::OptNeg { .. } => return Err(MilterError::Malformed("option negotiation")),
            Reply::Quarantine(reason) => {
                self.quarantine = Some(reason);
                return Ok(None);
            }
            Reply::Edit(Edit::ReplaceBody(b)) => {
                self.body_bytes += b.len() as u64;
                if self.body_bytes > self.body_limit {
                    return Err(MilterError::Malformed(
                        "body replacement larger than message_size_limit",
                    ));
                }
                // Consecutive chunks are one replacement.
                if let Some(Edit::ReplaceBody(prev)) = self.edits.last_mut() {
                    prev.extend_from_slice(&b);
                    return Ok(None);
                }
                Edit::ReplaceBody(b)
            }
            Reply::Edit(e) => e,
        };
        self.edits.push(edit);
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(bytes: &[u8]) -> Result<Reply, MilterError> {
        match read_reply(bytes)? {
            Some((r, n)) => {
                assert_eq!(n, bytes.len());
                Ok(r)
            }
            None => panic!("incomplete"),
        }
    }

    #[test]
    fn header_values_as_milters_get_them() {
        assert_eq!(sent_header_value(b"Subject: a\r\n\tb\r\n", false), "a\n\tb");
        assert_eq!(sent_header_value(b"Subject:  x\r\n", true), "  x");
        assert_eq!(sent_header_value(b"X-Empty:\r\n", false), "");
    }

    #[test]
    fn commands_are_packets() {
        let c = Command::OptNeg {
            version: 6,
            actions: action::ALL,
            protocol: 0,
        }
        .encode();
        assert_eq!(&c[..5], &[0, 0, 0, 13, b'O']);
        let c = Command::Connect {
            host: "mx.example".into(),
            family: Family::Inet4("192.0.2.1".parse().unwrap()),
            port: 25,
        }
        .encode();
        assert_eq!(&c[4..], b"Cmx.example\x004\x00\x19192.0.2.1\x00");
        let c = Command::Mail(vec!["<a@b>".into(), "SIZE=10".into()]).encode();
        assert_eq!(&c[4..], b"M<a@b>\x00SIZE=10\x00");
        let c = Command::Macros {
            command: b'C',
            pairs: vec![
                ("j".into(), "mx".into()),
                ("{daemon_name}".into(), "post\0fix".into()),
            ],
        }
        .encode();
        assert_eq!(&c[4..], b"DCj\x00mx\x00{daemon_name}\x00postfix\x00");
        assert_eq!(
            Command::Body(vec![b'x'; 70000]).encode().len(),
            4 + 1 + BODY_CHUNK
        );
    }

    #[test]
    fn replies_round_trip() {
        let all = vec![
            Reply::OptNeg {
                version: 6,
                actions: 0x1ff,
                protocol: 0x1fffff,
                macros: vec![(Stage::Mail, "{auth_authen} {mail_addr}".into())],
            },
            Reply::Accept,
            Reply::Continue,
            Reply::Discard,
            Reply::Reject,
            Reply::Tempfail,
            Reply::Skip,
            Reply::Progress,
            Reply::ConnFail,
            Reply::Shutdown,
            Reply::ReplyCode(SmtpReply {
                code: 550,
                enhanced: Some("5.7.1".into()),
                lines: vec!["first 100%".into(), "second".into()],
            }),
            Reply::Quarantine("looks bad".into()),
            Reply::Edit(Edit::AddRcpt("<x@y>".into(), String::new())),
            Reply::Edit(Edit::AddRcpt("<x@y>".into(), "NOTIFY=NEVER".into())),
            Reply::Edit(Edit::DelRcpt("<x@y>".into())),
            Reply::Edit(Edit::ReplaceBody(b"new\r\nbody\0with nul".to_vec())),
            Reply::Edit(Edit::AddHeader {
                name: "X-Spam".into(),
                value: "yes\n\tfolded".into(),
            }),
            Reply::Edit(Edit::InsertHeader {
                index: 0,
                name: "X-First".into(),
                value: "1".into(),
            }),
            Reply::Edit(Edit::ChangeHeader {
                index: 2,
                name: "Subject".into(),
                value: String::new(),
            }),
            Reply::Edit(Edit::ChangeFrom("<new@x>".into(), String::new())),
        ];
        for r in all {
            assert_eq!(one(&r.encode()), Ok(r.clone()), "{r:?}");
        }
    }

    #[test]
    fn reply_codes_are_checked_before_use() {
        let y = |t: &str| {
            let mut d = t.as_bytes().to_vec();
            d.push(0);
            one(&packet(b'y', &d))
        };
        let ok = y("451 4.7.1 Please try again later").unwrap();
        assert_eq!(
            ok,
            Reply::ReplyCode(SmtpReply {
                code: 451,
                enhanced: Some("4.7.1".into()),
                lines: vec!["Please try again later".into()],
            })
        );
        assert!(y("550-5.7.1 first\r\n550 5.7.1 second").is_ok());
        // Text that merely starts with the class digit is text.
        assert_eq!(
            y("550 5 things went wrong").unwrap(),
            Reply::ReplyCode(SmtpReply {
                code: 550,
                enhanced: None,
                lines: vec!["5 things went wrong".into()],
            })
        );
        assert_eq!(
            y("554 rejected 50%% of it"),
            Ok(Reply::ReplyCode(SmtpReply {
                code: 554,
                enhanced: None,
                lines: vec!["rejected 50% of it".into()],
            }))
        );
        for bad in [
            "250 2.0.0 fine", // not a refusal
            "5",              // the short reply of Postfix's 2026 fix
            "55",
            "550",                      // no separator
            "550-only line",            // a last line with '-'
            "550 first\r\n550 second",  // a non-last line without '-'
            "550-first\r\n451 second",  // two codes
            "550 4.7.1 class mismatch", // enhanced code of another class
            "550-x\r\n",                // ends in a line break
            "550 a\nb",                 // bare LF
            "550 4 of another class",
            "550-5.7.1 one\r\n550 two", // enhanced codes that differ by line
            "550-one\r\n550 5.7.1 two",
        ] {
            assert_eq!(y(bad), Err(MilterError::BadSmtpReply), "{bad:?}");
        }
        let long = format!("550 {}", "x".repeat(MAX_REPLY_LINE));
        assert_eq!(y(&long), Err(MilterError::BadSmtpReply));
        let many = vec!["550-x"; MAX_REPLY_LINES].join("\r\n") + "\r\n550 y";
        assert_eq!(y(&many), Err(MilterError::BadSmtpReply));
    }

    fn negotiated(actions: u32, protocol: u32) -> Negotiated {
        Negotiated::from_reply(
            action::ALL,
            step::ALL,
            Reply::OptNeg {
                version: 6,
                actions,
                protocol,
                macros: vec![],
            },
        )
        .unwrap()
    }

    #[test]
    fn negotiation_grants_only_what_was_offered() {
        let n = negotiated(action::ADDHDRS, step::NOHELO | step::NR_RCPT);
        assert!(!n.sends(Step::Helo) && n.sends(Step::Mail));
        assert!(!n.answers(Step::Rcpt) && n.answers(Step::Mail));
        assert!(n.sends(Step::EndOfMessage) && n.answers(Step::EndOfMessage));
        let r = |version, actions, protocol| Reply::OptNeg {
            version,
            actions,
            protocol,
            macros: vec![],
        };
        assert!(Negotiated::from_reply(action::ADDHDRS, 0, r(6, action::CHGBODY, 0)).is_err());
        assert!(Negotiated::from_reply(action::ALL, step::NOHELO, r(6, 0, step::NOMAIL)).is_err());
        assert!(Negotiated::from_reply(action::ALL, 0, r(7, 0, 0)).is_err());
        assert!(Negotiated::from_reply(action::ALL, 0, r(1, 0, 0)).is_err());
        assert!(Negotiated::from_reply(action::ALL, 0, Reply::Continue).is_err());
        let with_macros = Reply::OptNeg {
            version: 6,
            actions: action::SETSYMLIST,
            protocol: 0,
            macros: vec![(Stage::Mail, "{auth_authen} i".into())],
        };
        let n = Negotiated::from_reply(action::ALL, 0, with_macros).unwrap();
        assert_eq!(n.macros_for(Stage::Mail), Some(vec!["{auth_authen}", "i"]));
        assert_eq!(n.macros_for(Stage::Rcpt), None);
    }

    #[test]
    fn edits_come_only_at_the_end_and_only_as_negotiated() {
        let n = negotiated(action::ADDHDRS | action::CHGBODY, step::SKIP);
        let mut c = Collect::new(Step::EndOfMessage, &n, 10);
        let add = Reply::Edit(Edit::AddHeader {
            name: "X-A".into(),
            value: "b".into(),
        });
        assert_eq!(c.reply(Reply::Progress), Ok(None));
        assert_eq!(c.reply(add.clone()), Ok(None));
        assert_eq!(
            c.reply(Reply::Edit(Edit::ReplaceBody(b"abc".to_vec()))),
            Ok(None)
        );
        assert_eq!(
            c.reply(Reply::Edit(Edit::ReplaceBody(b"def".to_vec()))),
            Ok(None)
        );
        // Beyond the size limit: an error, not a truncated body.
        assert!(
            c.reply(Reply::Edit(Edit::ReplaceBody(b"ghijk".to_vec())))
                .is_err()
        );
        let mut c = Collect::new(Step::EndOfMessage, &n, 10);
        c.reply(Reply::Edit(Edit::ReplaceBody(b"abc".to_vec())))
            .unwrap();
        c.reply(Reply::Edit(Edit::ReplaceBody(b"def".to_vec())))
            .unwrap();
        assert_eq!(c.reply(Reply::Continue), Ok(Some(Outcome::Continue)));
        assert_eq!(c.edits, vec![Edit::ReplaceBody(b"abcdef".to_vec())]);
        // Not negotiated, or not at the end: errors.
        assert!(c.reply(Reply::Edit(Edit::DelRcpt("<a@b>".into()))).is_err());
        let mut rcpt = Collect::new(Step::Rcpt, &n, 10);
        assert!(rcpt.reply(add).is_err());
        assert!(rcpt.reply(Reply::Skip).is_err());
        let mut body = Collect::new(Step::Body, &n, 10);
        assert_eq!(body.reply(Reply::Skip), Ok(Some(Outcome::Skip)));
        let mut conn = Collect::new(Step::Connect, &n, 10);
        assert!(conn.reply(Reply::Discard).is_err());
        // Verdicts.
        let code = |c, e: &str| SmtpReply {
            code: c,
            enhanced: Some(e.into()),
            lines: vec!["no".into()],
        };
        for (r, o) in [
            (Reply::Reject, Outcome::Reject(None)),
            (Reply::Tempfail, Outcome::Tempfail(None)),
            (
                Reply::ReplyCode(code(554, "5.7.1")),
                Outcome::Reject(Some(code(554, "5.7.1"))),
            ),
            (
                Reply::ReplyCode(code(421, "4.7.0")),
                Outcome::Tempfail(Some(code(421, "4.7.0"))),
            ),
            (Reply::Accept, Outcome::Accept),
            (Reply::Discard, Outcome::Discard),
            (Reply::ConnFail, Outcome::Shutdown),
            (Reply::Shutdown, Outcome::Shutdown),
        ] {
            let mut c = Collect::new(Step::Mail, &n, 10);
            assert_eq!(c.reply(r), Ok(Some(o)));
        }
    }

    #[test]
    fn hostile_packets_are_errors() {
        // A length beyond the cap is refused before the data comes.
        let mut huge = ((MAX_PACKET + 1) as u32).to_be_bytes().to_vec();
        huge.push(b'b');
        assert_eq!(
            read_reply(&huge),
            Err(MilterError::BadLength(MAX_PACKET as u32 + 1))
        );
        assert_eq!(read_reply(&[0, 0, 0, 0]), Err(MilterError::BadLength(0)));
        // Incomplete: wait.
        assert_eq!(read_reply(&[0, 0, 0, 5, b'h']), Ok(None));
        assert_eq!(read_reply(&[0, 0]), Ok(None));
        for (cmd, data) in [
            (b'Z', &b""[..]),
            (b'a', b"x"),
            (b'h', b"X-A"),                                     // no NUL
            (b'h', b"X A\0v\0"),                                // a space in the name
            (b'h', b"X:A\0v\0"),                                // a colon in the name
            (b'h', b"X-A\0a\nb\0"),                             // a line break that does not fold
            (b'h', b"X-A\0a\rb\0"),                             // a bare CR
            (b'h', b"X-A\0v\0junk"),                            // trailing data
            (b'+', b"<a\x01b>\0"),                              // a control character
            (b'+', b"\xff\0"),                                  // not UTF-8
            (b'm', b"\0\0\0"),                                  // index cut short
            (b'O', b"\0\0\0\x06\0\0"),                          // cut short
            (b'O', b"\0\0\0\x06\0\0\0\0\0\0\0\0\0\0\0\x09x\0"), // no such stage
        ] {
            assert!(
                one(&packet(cmd, data)).is_err(),
                "{:?} {:?}",
                cmd as char,
                data
            );
        }
    }
}
