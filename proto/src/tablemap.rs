//! The two lookup protocols external table servers speak, sans-IO: the
//! bytes of a request, and an incremental parser for the reply that never
//! holds more than its limit. A server is an untrusted peer: anything that
//! is not a well-formed reply within the limit is an error, and an error is
//! a lookup error (a temporary failure), never "not found".
//!
//! - `tcp:` (tcp_table(5)): `get KEY\n`, answered by one line `200 DATA`,
//!   `500 TEXT` (not found) or `400 TEXT` (try again), with `%XX` quoting
//!   of `%`, whitespace and non-printing bytes, at most 4096 bytes.
//! - `socketmap:` (socketmap_table(5)): the netstring `NAME KEY`, answered
//!   by a netstring `OK DATA`, `NOTFOUND `, `TEMP`, `TIMEOUT` or `PERM`
//!   with a reason, at most 100,000 bytes.

/// What a table server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Found(String),
    NotFound,
    /// The server says the lookup failed (400, TEMP, TIMEOUT, PERM).
    Failed(String),
}

/// Longest tcp_table reply line, newline included.
pub const TCP_MAX_REPLY: usize = 4096;
/// Longest socketmap reply, without the netstring framing.
pub const SOCKETMAP_MAX_REPLY: usize = 100_000;
/// Longest socketmap query, without the netstring framing.
pub const SOCKETMAP_MAX_QUERY: usize = 10_000;

/// `%XX` quoting of `%`, whitespace and non-printing bytes.
pub fn hex_quote(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s {
        if b == b'%' || !b.is_ascii_graphic() {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// Undoes [`hex_quote`]; None for a malformed `%` sequence.
pub fn hex_unquote(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hex = std::str::from_utf8(s.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The tcp_table request for `key`.
pub fn tcp_request(key: &str) -> Vec<u8> {
    format!("get {}\n", hex_quote(key.as_bytes())).into_bytes()
}

/// The socketmap request for `key` in map `name`.
pub fn socketmap_request(name: &str, key: &str) -> Result<Vec<u8>, String> {
    let body = format!("{name} {key}");
    if body.len() > SOCKETMAP_MAX_QUERY {
        return Err(format!(
            "socketmap query longer than {SOCKETMAP_MAX_QUERY} bytes"
        ));
    }
    Ok(format!("{}:{body},", body.len()).into_bytes())
}

/// Where a reply parser stands after more bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Needs more bytes.
    More,
    /// The reply, and how many of the bytes given were used.
    Done(Answer, usize),
}

/// Parses a tcp_table reply line from `buf` (everything received so far).
pub fn tcp_reply(buf: &[u8]) -> Result<Progress, String> {
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() >= TCP_MAX_REPLY {
            return Err(format!("reply longer than {TCP_MAX_REPLY} bytes"));
        }
        return Ok(Progress::More);
    };
    if end + 1 > TCP_MAX_REPLY {
        return Err(format!("reply longer than {TCP_MAX_REPLY} bytes"));
    }
    let line = &buf[..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let malformed = || format!("malformed reply: {}", printable(line));
    if line.len() < 4 || !line[..3].iter().all(u8::is_ascii_digit) || !line[3].is_ascii_whitespace()
    {
        return Err(malformed());
    }
    let text = hex_unquote(&line[4..]).ok_or_else(malformed)?;
    let text = String::from_utf8(text).map_err(|_| malformed())?;
    let answer = match &line[..3] {
        b"200" => Answer::Found(text),
        b"500" => Answer::NotFound,
        b"400" => Answer::Failed(text),
        _ => return Err(format!("bad status code: {}", printable(line))),
    };
    Ok(Progress::Done(answer, end + 1))
}

/// Parses a socketmap reply netstring from `buf`.
pub fn socketmap_reply(buf: &[u8]) -> Result<Progress, String> {
    let Some(colon) = buf.iter().position(|&b| b == b':') else {
        if buf.len() > 6 || !buf.iter().all(u8::is_ascii_digit) {
            return Err("malformed netstring length".into());
        }
        return Ok(Progress::More);
    };
    let digits = &buf[..colon];
    if digits.is_empty() || digits.len() > 6 || !digits.iter().all(u8::is_ascii_digit) {
        return Err("malformed netstring length".into());
    }
    let len: usize = std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse().ok())
        .ok_or("malformed netstring length")?;
    if len > SOCKETMAP_MAX_REPLY {
        return Err(format!("reply longer than {SOCKETMAP_MAX_REPLY} bytes"));
    }
    let start = colon + 1;
    if buf.len() < start + len + 1 {
        return Ok(Progress::More);
    }
    if buf[start + len] != b',' {
        return Err("netstring without its trailing comma".into());
    }
    let body = std::str::from_utf8(&buf[start..start + len])
        .map_err(|_| "reply is not UTF-8".to_string())?;
    let (status, rest) = body.split_once(' ').unwrap_or((body, ""));
    let answer = match status {
        "OK" => Answer::Found(rest.to_string()),
        "NOTFOUND" => Answer::NotFound,
        "TEMP" | "TIMEOUT" | "PERM" => {
            Answer::Failed(format!("{status} {rest}").trim().to_string())
        }
        _ => return Err(format!("bad status: {}", printable(body.as_bytes()))),
    };
    Ok(Progress::Done(answer, start + len + 1))
}

/// At most 100 bytes of `b`, with unprintable bytes as `_`, for messages.
fn printable(b: &[u8]) -> String {
    b.iter()
        .take(100)
        .map(|&c| {
            if c.is_ascii_graphic() || c == b' ' {
                c as char
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_table_round_trip() {
        assert_eq!(tcp_request("a b%c\té"), b"get a%20b%25c%09%C3%A9\n");
        assert_eq!(
            tcp_reply(b"200 SRS0=x=y@example.com\n").unwrap(),
            Progress::Done(Answer::Found("SRS0=x=y@example.com".into()), 25)
        );
        assert_eq!(
            tcp_reply(b"200 two%20words\r\nrest").unwrap(),
            Progress::Done(Answer::Found("two words".into()), 17)
        );
        assert_eq!(
            tcp_reply(b"500 not found\n").unwrap(),
            Progress::Done(Answer::NotFound, 14)
        );
        assert_eq!(
            tcp_reply(b"400 busy\n").unwrap(),
            Progress::Done(Answer::Failed("busy".into()), 9)
        );
        assert_eq!(tcp_reply(b"200 partial").unwrap(), Progress::More);
        for bad in [
            &b"20 x\n"[..],
            b"abc x\n",
            b"200x\n",
            b"300 x\n",
            b"200 %zz\n",
            b"200 %4\n",
        ] {
            assert!(tcp_reply(bad).is_err(), "{bad:?}");
        }
        assert!(tcp_reply(&vec![b'a'; TCP_MAX_REPLY]).is_err());
    }

    #[test]
    fn socketmap_round_trip() {
        assert_eq!(
            socketmap_request("virtual", "a@b").unwrap(),
            b"11:virtual a@b,"
        );
        assert!(socketmap_request("m", &"x".repeat(SOCKETMAP_MAX_QUERY)).is_err());
        assert_eq!(
            socketmap_reply(b"13:OK smtp:[h]:2,").unwrap(),
            Progress::Done(Answer::Found("smtp:[h]:2".into()), 17)
        );
        assert_eq!(
            socketmap_reply(b"9:NOTFOUND ,").unwrap(),
            Progress::Done(Answer::NotFound, 12)
        );
        assert_eq!(
            socketmap_reply(b"12:TEMP db down,").unwrap(),
            Progress::Done(Answer::Failed("TEMP db down".into()), 16)
        );
        assert_eq!(socketmap_reply(b"13:OK smtp").unwrap(), Progress::More);
        assert_eq!(socketmap_reply(b"13").unwrap(), Progress::More);
        for bad in [&b"x:OK,"[..], b"2:OK;", b"1234567:", b"5:HELLO,", b":OK,"] {
            assert!(socketmap_reply(bad).is_err(), "{bad:?}");
        }
        assert!(socketmap_reply(format!("{}:", SOCKETMAP_MAX_REPLY + 1).as_bytes()).is_err());
    }

    #[test]
    fn quoting_is_reversible() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(hex_unquote(hex_quote(&all).as_bytes()).unwrap(), all);
    }
}
