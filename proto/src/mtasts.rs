//! MTA-STS (RFC 8461) and TLS-RPT (RFC 8460) as they arrive from outside:
//! the `_mta-sts` TXT record, the policy file fetched over HTTPS, and the
//! `_smtp._tls` TXT record. Sans-IO: the fetching and caching are the
//! caller's. Every limit the RFCs set is enforced here, and anything
//! malformed is an error, never a weaker policy.

/// RFC 8461 §3.3: a policy file larger than this is refused.
pub const MAX_POLICY: usize = 64 * 1024;
/// RFC 8461 §3.2: max_age is at most 31557600 seconds (about a year).
pub const MAX_AGE: u32 = 31_557_600;
/// MX patterns kept from one policy.
pub const MAX_MX: usize = 64;

/// `_mta-sts.DOMAIN` TXT: `v=STSv1; id=...;`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StsRecord {
    /// 1 to 32 letters and digits: a new id means a new policy to fetch.
    pub id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    Enforce,
    Testing,
    None,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }
}

/// A policy file (`https://mta-sts.DOMAIN/.well-known/mta-sts.txt`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub mode: Mode,
    /// MX host patterns, lower case: `mx.example.com` or `*.example.com`.
    pub mx: Vec<String>,
    /// Seconds the policy may be cached.
    pub max_age: u32,
}

/// The `key=value` fields of a TXT record in the RFCs' shared syntax:
/// `;`-separated, optional white space around each.
fn fields(txt: &str) -> Result<Vec<(&str, &str)>, String> {
    let mut out = Vec::new();
    for part in txt.split(';') {
        let part = part.trim_matches([' ', '\t']);
        if part.is_empty() {
            continue;
        }
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("\"{}\" is not name=value", part.escape_default()))?;
        if k.is_empty()
            || !k
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-')
        {
            return Err(format!("bad field name \"{}\"", k.escape_default()));
        }
        out.push((k, v));
    }
    Ok(out)
}

/// Parses one `_mta-sts` TXT string. Err for a record that is not
/// STSv1 (several records, or none, are the caller's to judge: RFC 8461
/// §3.1 treats more than one STSv1 record as no policy).
pub fn sts_record(txt: &str) -> Result<StsRecord, String> {
    let f = fields(txt)?;
    match f.first() {
        Some(("v", "STSv1")) => {}
        _ => return Err("not an STSv1 record (v=STSv1 must come first)".into()),
    }
    let id = f
        .iter()
        .find(|(k, _)| *k == "id")
        .map(|(_, v)| *v)
        .ok_or("no id= field")?;
    if id.is_empty() || id.len() > 32 || !id.bytes().all(|c| c.is_ascii_alphanumeric()) {
        return Err(format!("bad id \"{}\"", id.escape_default()));
    }
    Ok(StsRecord { id: id.to_string() })
}

fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        })
}

/// Parses a policy file's body. Lines end in CRLF or LF; keys are
/// `version` (STSv1, required), `mode` (required), `mx` (one per line,
/// required unless mode is none) and `max_age` (required); others are
/// ignored, as the RFC asks.
pub fn policy(body: &[u8]) -> Result<Policy, String> {
    if body.len() > MAX_POLICY {
        return Err(format!("policy larger than {MAX_POLICY} bytes"));
    }
    let text = std::str::from_utf8(body).map_err(|_| "policy is not UTF-8".to_string())?;
    let (mut version, mut mode, mut max_age) = (None, None, None);
    let mut mx = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| format!("\"{}\" is not key: value", line.escape_default()))?;
        let (k, v) = (k.trim(), v.trim_matches([' ', '\t']));
        match k {
            "version" if version.is_some() => return Err("version given twice".into()),
            "version" => version = Some(v),
            "mode" => {
                let m = match v {
                    "enforce" => Mode::Enforce,
                    "testing" => Mode::Testing,
                    "none" => Mode::None,
                    other => return Err(format!("bad mode \"{}\"", other.escape_default())),
                };
                if mode.replace(m).is_some() {
                    return Err("mode given twice".into());
                }
            }
            "max_age" => {
                let n: u32 = (v.len() <= 10 && v.bytes().all(|c| c.is_ascii_digit()))
                    .then(|| v.parse().ok())
                    .flatten()
                    .filter(|n| *n <= MAX_AGE)
                    .ok_or_else(|| format!("bad max_age \"{}\"", v.escape_default()))?;
                if max_age.replace(n).is_some() {
                    return Err("max_age given twice".into());
                }
            }
            "mx" => {
                let p = v.trim_end_matches('.').to_ascii_lowercase();
                let host = p.strip_prefix("*.").unwrap_or(&p);
                if !valid_host(host) {
                    return Err(format!("bad mx pattern \"{}\"", v.escape_default()));
                }
                if mx.len() >= MAX_MX {
                    return Err(format!("more than {MAX_MX} mx patterns"));
                }
                if !mx.contains(&p) {
                    mx.push(p);
                }
            }
            _ => {}
        }
    }
    if version != Some("STSv1") {
        return Err("no \"version: STSv1\"".into());
    }
    let mode = mode.ok_or("no mode")?;
    let max_age = max_age.ok_or("no max_age")?;
    if mx.is_empty() && mode != Mode::None {
        return Err("no mx pattern".into());
    }
    Ok(Policy { mode, mx, max_age })
}

impl Policy {
    /// Does an MX host name match a pattern of the policy? A `*.` pattern
    /// matches exactly one more label (RFC 8461 §4.1).
    pub fn matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.mx.iter().any(|p| match p.strip_prefix("*.") {
            Some(parent) => host
                .split_once('.')
                .is_some_and(|(first, rest)| !first.is_empty() && rest == parent),
            None => *p == host,
        })
    }

    /// The policy as a policy file says it (for the cache and for tests).
    pub fn render(&self) -> String {
        let mut s = format!("version: STSv1\r\nmode: {}\r\n", self.mode.as_str());
        for m in &self.mx {
            s.push_str(&format!("mx: {m}\r\n"));
        }
        s.push_str(&format!("max_age: {}\r\n", self.max_age));
        s
    }
}

/// Most bytes of a response's status line and headers.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// Most bytes of a whole response the fetcher reads.
pub const MAX_RESPONSE: usize = MAX_RESPONSE_HEAD + MAX_POLICY;

/// The request for `domain`'s policy (RFC 8461 §3.3), over HTTP/1.0: the
/// server answers without chunked coding and closes the connection at the
/// end, so the response is everything read until then.
pub fn policy_request(domain: &str) -> Vec<u8> {
    format!(
        "GET /.well-known/mta-sts.txt HTTP/1.0\r\nHost: mta-sts.{domain}\r\n\
         User-Agent: Postern\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// A whole HTTP response to [`policy_request`], as read until the server
/// closed the connection: the policy, or why there is none. Only 200 with
/// a `text/plain` body counts; redirects are not followed (RFC 8461
/// §3.3); a body shorter or longer than its Content-Length, a transfer
/// coding, or more than [`MAX_POLICY`] bytes is refused.
pub fn policy_response(resp: &[u8]) -> Result<Policy, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut headers);
    let head = match r.parse(resp) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_RESPONSE_HEAD => n,
        Ok(httparse::Status::Complete(_)) => return Err("response head too large".into()),
        Ok(httparse::Status::Partial) => return Err("response ends in its head".into()),
        Err(e) => return Err(format!("bad HTTP response: {e}")),
    };
    match r.code {
        Some(200) => {}
        Some(c @ 300..=399) => return Err(format!("HTTP {c}: redirects are not followed")),
        Some(c) => return Err(format!("HTTP {c}")),
        None => return Err("no status".into()),
    }
    let header = |name: &str| {
        r.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    let media = header("content-type").unwrap_or_default();
    if media.split(';').next().map(str::trim) != Some("text/plain") {
        return Err(format!(
            "Content-Type \"{}\" is not text/plain",
            media.escape_default()
        ));
    }
    if header("transfer-encoding").is_some() {
        return Err("a transfer coding on an HTTP/1.0 response".into());
    }
    let body = &resp[head..];
    if let Some(len) = header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| format!("bad Content-Length \"{}\"", len.escape_default()))?;
        if len != body.len() {
            return Err(format!(
                "body of {} bytes where Content-Length says {len}",
                body.len()
            ));
        }
    }
    policy(body)
}

/// Where TLS-RPT reports go (RFC 8460 §3): `mailto:` or `https:` URIs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rua {
    Mailto(String),
    Https(String),
}

/// Parses one `_smtp._tls` TXT string: `v=TLSRPTv1; rua=uri,uri`.
pub fn tlsrpt_record(txt: &str) -> Result<Vec<Rua>, String> {
    let f = fields(txt)?;
    match f.first() {
        Some(("v", "TLSRPTv1")) => {}
        _ => return Err("not a TLSRPTv1 record (v=TLSRPTv1 must come first)".into()),
    }
    let rua = f
        .iter()
        .find(|(k, _)| *k == "rua")
        .map(|(_, v)| *v)
        .ok_or("no rua= field")?;
    let mut out = Vec::new();
    for uri in rua.split(',') {
        let uri = uri.trim_matches([' ', '\t']);
        if let Some(addr) = uri.strip_prefix("mailto:") {
            // %-escapes and query parts are not for us: an address only.
            let valid = addr.len() <= 254
                && addr
                    .split_once('@')
                    .is_some_and(|(l, d)| !l.is_empty() && valid_host(d))
                && addr
                    .bytes()
                    .all(|c| c.is_ascii_graphic() && c != b'?' && c != b'%');
            if !valid {
                return Err(format!("bad rua address \"{}\"", uri.escape_default()));
            }
            out.push(Rua::Mailto(addr.to_string()));
        } else if let Some(rest) = uri.strip_prefix("https://") {
            let host = rest.split(['/', ':']).next().unwrap_or("");
            if !valid_host(host) || uri.len() > 2048 || !uri.bytes().all(|c| c.is_ascii_graphic()) {
                return Err(format!("bad rua URI \"{}\"", uri.escape_default()));
            }
            out.push(Rua::Https(uri.to_string()));
        } else {
            return Err(format!("unsupported rua URI \"{}\"", uri.escape_default()));
        }
    }
    if out.is_empty() {
        return Err("empty rua".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sts_records_as_the_rfc_writes_them() {
        assert_eq!(
            sts_record("v=STSv1; id=20160831085700Z;").unwrap().id,
            "20160831085700Z"
        );
        assert_eq!(sts_record("v=STSv1;id=abc").unwrap().id, "abc");
        for bad in [
            "id=1; v=STSv1",
            "v=STSv2; id=1",
            "v=STSv1",
            "v=STSv1; id=",
            "v=STSv1; id=has-dash",
            "v=STSv1; id=123456789012345678901234567890123",
            "v=STSv1; garbage",
        ] {
            assert!(sts_record(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn policy_files_and_mx_patterns() {
        let p = policy(
            b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\nfuture: ignored\r\n",
        )
        .unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.max_age, 604800);
        assert!(p.matches("mail.example.com"));
        assert!(p.matches("MAIL.example.com."));
        assert!(p.matches("mx1.example.net"));
        assert!(!p.matches("example.net"));
        assert!(!p.matches("a.b.example.net"));
        assert!(!p.matches("evil-mail.example.com"));
        assert_eq!(policy(p.render().as_bytes()).unwrap(), p);
        // LF line ends, mode none without mx.
        let n = policy(b"version: STSv1\nmode: none\nmax_age: 86400\n").unwrap();
        assert_eq!((n.mode, n.mx.len()), (Mode::None, 0));
        for bad in [
            &b"mode: enforce\nmx: a.example\nmax_age: 1\n"[..],
            b"version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1\n",
            b"version: STSv1\nmode: enforce\nmax_age: 1\n",
            b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557601\n",
            b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n",
            b"version: STSv1\nmode: enforce\nmx: a..example\nmax_age: 1\n",
            b"version: STSv1\nmode: enforce\nmode: testing\nmx: a.example\nmax_age: 1\n",
            b"version: STSv1\nno colon here\n",
        ] {
            assert!(policy(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(policy(&vec![b' '; MAX_POLICY + 1]).is_err());
    }

    #[test]
    fn tlsrpt_records() {
        assert_eq!(
            tlsrpt_record(
                "v=TLSRPTv1; rua=mailto:reports@example.com,https://reporting.example.com/v1/tlsrpt"
            )
            .unwrap(),
            vec![
                Rua::Mailto("reports@example.com".into()),
                Rua::Https("https://reporting.example.com/v1/tlsrpt".into())
            ]
        );
        for bad in [
            "rua=mailto:a@b.example; v=TLSRPTv1",
            "v=TLSRPTv1",
            "v=TLSRPTv1; rua=ftp://x.example/",
            "v=TLSRPTv1; rua=mailto:nobody",
            "v=TLSRPTv1; rua=mailto:a@b.example?subject=x",
        ] {
            assert!(tlsrpt_record(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn policy_responses() {
        let body = "version: STSv1\r\nmode: enforce\r\nmx: mx.example.com\r\nmax_age: 86400\r\n";
        let ok = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let p = policy_response(ok.as_bytes()).unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert!(p.matches("mx.example.com"));
        // No Content-Length: the body is what came before the close.
        let open = format!("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n{body}");
        assert!(policy_response(open.as_bytes()).is_ok());
        for (resp, why) in [
            (
                "HTTP/1.1 301 Moved\r\nLocation: https://evil.example/\r\n\r\n".to_string(),
                "redirects are not followed",
            ),
            ("HTTP/1.1 404 Not Found\r\n\r\n".into(), "HTTP 404"),
            (
                format!("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n{body}"),
                "not text/plain",
            ),
            (
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 999\r\n\r\n{body}"
                ),
                "Content-Length says 999",
            ),
            (
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
                ),
                "transfer coding",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Type: text/pl".into(),
                "ends in its head",
            ),
            ("SSH-2.0-OpenSSH\r\n".into(), "bad HTTP response"),
        ] {
            let e = policy_response(resp.as_bytes()).unwrap_err();
            assert!(e.contains(why), "{resp:?}: {e}");
        }
        let big = format!(
            "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n{body}{}",
            "x: y\r\n".repeat(MAX_POLICY / 6 + 1)
        );
        assert!(
            policy_response(big.as_bytes())
                .unwrap_err()
                .contains("larger")
        );
        assert!(
            String::from_utf8(policy_request("example.com"))
                .unwrap()
                .starts_with(
                    "GET /.well-known/mta-sts.txt HTTP/1.0\r\nHost: mta-sts.example.com\r\n"
                )
        );
    }
}
