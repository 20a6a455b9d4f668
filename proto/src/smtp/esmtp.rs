//! ESMTP parameters of MAIL and RCPT (RFC 1870 SIZE, RFC 6152 BODY, RFC 6531
//! SMTPUTF8, RFC 3461 DSN), RFC 3461 xtext in both directions, and the
//! SASL response lines of RFC 4954. Errors are the reply to send.
use super::command::EsmtpParam;
use super::reply::Reply;
use crate::queue::notify;

/// Longest ENVID Postern keeps (RFC 3461 says 100 characters).
pub const MAX_ENVID: usize = 100;

/// What the parameters of a MAIL command ask for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    pub size: Option<u64>,
    pub body_8bit: bool,
    pub smtputf8: bool,
    /// RET: 0 not given, 1 FULL, 2 HDRS (the queue record's encoding).
    pub ret: u8,
    /// ENVID, xtext-decoded; empty when not given.
    pub envid: String,
    /// REQUIRETLS (RFC 8689): the message must go on over verified TLS.
    pub requiretls: bool,
}

/// What the parameters of a RCPT command ask for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RcptParams {
    /// NOTIFY bits (`queue::notify`); 0 when not given.
    pub notify: u8,
    /// ORCPT as the client sent it (`type;xtext`); empty when not given.
    pub orcpt: String,
}

fn unsupported(key: &str) -> Reply {
    Reply::new(555, "5.5.4", &format!("Unsupported option: {key}"))
}

/// Checks MAIL parameters. `esmtp`: the client said EHLO (a HELO session
/// has no parameters). `size_limit`: message_size_limit. `requiretls`:
/// REQUIRETLS was announced (requiretls_enable, inside TLS); otherwise the
/// parameter is unsupported, as in Postfix.
pub fn mail_params(
    params: &[EsmtpParam],
    esmtp: bool,
    size_limit: u64,
    requiretls: bool,
) -> Result<MailParams, Reply> {
    let mut m = MailParams::default();
    for p in params {
        if !esmtp {
            return Err(unsupported(&p.key));
        }
        let v = p.value.as_deref();
        match (p.key.as_str(), v) {
            ("SIZE", Some(v)) => match v.parse::<u64>() {
                Ok(n) if n > size_limit => {
                    return Err(Reply::new(552, "5.3.4", "Message size exceeds fixed limit"));
                }
                Ok(n) => m.size = Some(n),
                Err(_) => return Err(Reply::new(501, "5.5.4", "Bad message size syntax")),
            },
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("8BITMIME") => m.body_8bit = true,
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") => {}
            ("BODY", _) => return Err(Reply::new(501, "5.5.4", "Bad BODY keyword syntax")),
            ("SMTPUTF8", None) => m.smtputf8 = true,
            ("REQUIRETLS", None) if requiretls => m.requiretls = true,
            ("RET", Some(v)) if v.eq_ignore_ascii_case("FULL") => m.ret = 1,
            ("RET", Some(v)) if v.eq_ignore_ascii_case("HDRS") => m.ret = 2,
            ("RET", _) => return Err(Reply::new(501, "5.5.4", "Bad RET parameter syntax")),
            ("ENVID", Some(v)) => {
                match xtext_decode(v).filter(|s| !s.is_empty() && s.len() <= MAX_ENVID) {
                    Some(s) => m.envid = s,
                    None => return Err(Reply::new(501, "5.5.4", "Bad ENVID parameter syntax")),
                }
            }
            _ => return Err(unsupported(&p.key)),
        }
    }
    Ok(m)
}

/// Checks RCPT parameters (`esmtp` as for [`mail_params`]).
pub fn rcpt_params(params: &[EsmtpParam], esmtp: bool) -> Result<RcptParams, Reply> {
    let mut r = RcptParams::default();
    let bad_notify = || Reply::new(501, "5.5.4", "Error: Bad NOTIFY parameter syntax");
    for p in params {
        if !esmtp {
            return Err(unsupported(&p.key));
        }
        match (p.key.as_str(), p.value.as_deref()) {
            ("NOTIFY", Some(v)) => {
                for word in v.split(',') {
                    r.notify |= match word.to_ascii_uppercase().as_str() {
                        "NEVER" => notify::NEVER,
                        "SUCCESS" => notify::SUCCESS,
                        "FAILURE" => notify::FAILURE,
                        "DELAY" => notify::DELAY,
                        _ => return Err(bad_notify()),
                    };
                }
                if r.notify & notify::NEVER != 0 && r.notify != notify::NEVER {
                    return Err(bad_notify());
                }
            }
            ("ORCPT", Some(v)) => {
                let ok = v.split_once(';').is_some_and(|(t, a)| {
                    (t.eq_ignore_ascii_case("rfc822") || t.eq_ignore_ascii_case("utf-8"))
                        && xtext_decode(a).is_some_and(|a| !a.is_empty())
                });
                if !ok {
                    return Err(Reply::new(
                        501,
                        "5.5.4",
                        "Error: Bad ORCPT parameter syntax",
                    ));
                }
                r.orcpt = v.to_string();
            }
            _ => return Err(unsupported(&p.key)),
        }
    }
    Ok(r)
}

/// Decodes RFC 3461 xtext; None when malformed (a `+` not followed by two
/// upper-case hex digits, a character outside `!`..`~`, or `=`).
pub fn xtext_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                let h = s.get(i + 1..i + 3)?;
                if !h
                    .bytes()
                    .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c))
                {
                    return None;
                }
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 3;
            }
            c @ 33..=126 if c != b'=' => {
                out.push(c);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// Encodes RFC 3461 xtext: `+`, `=` and everything outside `!`..`~` as `+XX`.
pub fn xtext_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (33..=126).contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// A client's SASL response line (RFC 4954 4): base64, `=` for an empty
/// response, `*` to cancel. Errors are the reply that ends the exchange.
pub fn sasl_response(line: &[u8]) -> Result<Vec<u8>, Reply> {
    use base64::Engine;
    match line {
        b"*" => Err(Reply::new(501, "5.7.0", "Authentication aborted")),
        b"=" => Ok(Vec::new()),
        l => base64::engine::general_purpose::STANDARD
            .decode(l)
            .map_err(|_| Reply::new(501, "5.5.2", "Cannot decode response")),
    }
}

/// The credentials of a SASL PLAIN response (RFC 4616): `authzid NUL
/// authcid NUL password`, where an authzid, if given, must equal the
/// authcid (Postern has no proxy authorization).
pub fn sasl_plain(resp: &[u8]) -> Result<(String, Vec<u8>), Reply> {
    let mut parts = resp.splitn(3, |&b| b == 0);
    match (parts.next(), parts.next(), parts.next()) {
        (Some(z), Some(u), Some(p)) if z.is_empty() || z == u => {
            Ok((String::from_utf8_lossy(u).into_owned(), p.to_vec()))
        }
        _ => Err(Reply::new(
            535,
            "5.7.8",
            "Error: authentication failed: Invalid authentication message",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(k: &str, v: Option<&str>) -> EsmtpParam {
        EsmtpParam {
            key: k.into(),
            value: v.map(Into::into),
        }
    }

    #[test]
    fn xtext_round_trips() {
        for s in ["plain", "a+b=c", "spa ce", "ünï", "+", "="] {
            assert_eq!(xtext_decode(&xtext_encode(s)).as_deref(), Some(s));
        }
        assert_eq!(xtext_decode("a+2Bb").as_deref(), Some("a+b"));
        assert_eq!(xtext_decode("a+2b"), None, "lower-case hex is not xtext");
        assert_eq!(xtext_decode("a+2"), None);
        assert_eq!(xtext_decode("a=b"), None);
        assert_eq!(xtext_decode("a b"), None);
    }

    #[test]
    fn mail_parameters() {
        let ok = mail_params(
            &[
                p("SIZE", Some("10")),
                p("BODY", Some("8bitmime")),
                p("SMTPUTF8", None),
                p("RET", Some("hdrs")),
                p("ENVID", Some("x+2By")),
                p("REQUIRETLS", None),
            ],
            true,
            100,
            true,
        )
        .unwrap();
        assert_eq!(
            ok,
            MailParams {
                size: Some(10),
                body_8bit: true,
                smtputf8: true,
                ret: 2,
                envid: "x+y".into(),
                requiretls: true,
            }
        );
        let code = |ps: &[EsmtpParam], esmtp| mail_params(ps, esmtp, 100, false).unwrap_err().code;
        // REQUIRETLS only where it was announced (inside TLS).
        assert_eq!(code(&[p("REQUIRETLS", None)], true), 555);
        assert_eq!(code(&[p("REQUIRETLS", Some("x"))], true), 555);
        assert_eq!(code(&[p("SIZE", Some("101"))], true), 552);
        assert_eq!(code(&[p("SIZE", Some("x"))], true), 501);
        assert_eq!(code(&[p("SIZE", Some("1"))], false), 555);
        assert_eq!(code(&[p("BODY", Some("BINARYMIME"))], true), 501);
        assert_eq!(code(&[p("RET", None)], true), 501);
        assert_eq!(code(&[p("ENVID", Some(&"a".repeat(101)))], true), 501);
        assert_eq!(code(&[p("XFOO", None)], true), 555);
    }

    #[test]
    fn rcpt_parameters() {
        let r = rcpt_params(
            &[
                p("NOTIFY", Some("success,failure")),
                p("ORCPT", Some("rfc822;a+40b")),
            ],
            true,
        )
        .unwrap();
        assert_eq!(r.notify, notify::SUCCESS | notify::FAILURE);
        assert_eq!(r.orcpt, "rfc822;a+40b");
        let code = |ps: &[EsmtpParam]| rcpt_params(ps, true).unwrap_err().code;
        assert_eq!(code(&[p("NOTIFY", Some("NEVER,DELAY"))]), 501);
        assert_eq!(code(&[p("NOTIFY", Some("SOMETIMES"))]), 501);
        assert_eq!(code(&[p("ORCPT", Some("x400;a"))]), 501);
        assert_eq!(code(&[p("ORCPT", Some("rfc822;"))]), 501);
        assert_eq!(code(&[p("XFOO", None)]), 555);
    }

    #[test]
    fn sasl_lines() {
        assert_eq!(sasl_response(b"=").unwrap(), b"");
        assert_eq!(sasl_response(b"*").unwrap_err().code, 501);
        assert_eq!(sasl_response(b"!!").unwrap_err().code, 501);
        assert_eq!(sasl_response(b"YQ==").unwrap(), b"a");
        assert_eq!(
            sasl_plain(b"\0u\0pw").unwrap(),
            ("u".to_string(), b"pw".to_vec())
        );
        assert_eq!(sasl_plain(b"u\0u\0pw").unwrap().0, "u");
        assert_eq!(sasl_plain(b"other\0u\0pw").unwrap_err().code, 535);
        assert_eq!(sasl_plain(b"u\0pw").unwrap_err().code, 535);
    }
}
