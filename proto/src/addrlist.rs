//! The addresses in a message header's value (From, To, Cc, ...), found
//! so that they can be rewritten in place (canonical mapping, masquerading,
//! qualifying a bare name): everything around them (display names,
//! comments, groups, folding) stays byte for byte.
//!
//! The grammar is RFC 5322's address-list, read leniently as Postfix's
//! tok822 does: quoted strings and nested comments are skipped whole, a
//! top-level `,` or `;` ends a mailbox, a top-level `:` outside angle
//! brackets ends a group's name, and a mailbox is either the inside of
//! `<...>` or its whole text without comments. An address with a comment
//! inside it, or bytes that are not UTF-8, is left as it is.

/// At most this many addresses are found in one header (Postfix's
/// token limit stops its parser in the same way); the rest stay as they
/// are.
pub const MAX_ADDRESSES: usize = 1000;

/// One address in a header value: its bytes are `value[start..end]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    /// The address in internal form: a quoted local part unquoted.
    pub address: String,
}

/// The addresses in `value`, in order.
pub fn addresses(value: &[u8]) -> Vec<Span> {
    let mut out = Vec::new();
    let mut seg_start = 0;
    let mut i = 0;
    let mut angle: Option<usize> = None;
    let mut angle_span: Option<(usize, usize)> = None;
    while i < value.len() {
        if out.len() >= MAX_ADDRESSES {
            return out;
        }
        match value[i] {
            b'"' => i = skip_quoted(value, i),
            b'(' => i = skip_comment(value, i),
            b'[' => i = skip_literal(value, i),
            b'<' if angle.is_none() => {
                angle = Some(i + 1);
                i += 1;
            }
            b'>' if angle.is_some() => {
                if angle_span.is_none() {
                    angle_span = Some((angle.unwrap_or(i), i));
                }
                angle = None;
                i += 1;
            }
            b':' if angle.is_none() => {
                // A group's display name ends here.
                seg_start = i + 1;
                angle_span = None;
                i += 1;
            }
            b',' | b';' if angle.is_none() => {
                push(value, seg_start, i, angle_span.take(), &mut out);
                seg_start = i + 1;
                i += 1;
            }
            _ => i += 1,
        }
    }
    if angle.is_none() {
        push(value, seg_start, value.len(), angle_span, &mut out);
    }
    out
}

/// The index after the quoted string that starts at `i`.
fn skip_quoted(v: &[u8], mut i: usize) -> usize {
    i += 1;
    while i < v.len() {
        match v[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    v.len()
}

/// The index after the (nested) comment that starts at `i`.
fn skip_comment(v: &[u8], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < v.len() {
        match v[i] {
            b'\\' => i += 2,
            b'(' => {
                depth += 1;
                i += 1;
            }
            b')' => {
                depth -= 1;
                i += 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    v.len()
}

/// The index after the domain literal that starts at `i`.
fn skip_literal(v: &[u8], mut i: usize) -> usize {
    while i < v.len() {
        match v[i] {
            b'\\' => i += 2,
            b']' => return i + 1,
            _ => i += 1,
        }
    }
    v.len()
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// One mailbox, `value[start..end]`: the inside of its angle brackets if
/// it has them, else its text without leading and trailing white space
/// and comments.
fn push(
    value: &[u8],
    start: usize,
    end: usize,
    angle: Option<(usize, usize)>,
    out: &mut Vec<Span>,
) {
    let (mut s, mut e) = match angle {
        Some((a, b)) => (a, b),
        None => (start, end),
    };
    // Leading and trailing white space and comments.
    loop {
        while s < e && is_space(value[s]) {
            s += 1;
        }
        if s < e && value[s] == b'(' {
            s = skip_comment(value, s).min(e);
            continue;
        }
        break;
    }
    loop {
        while e > s && is_space(value[e - 1]) {
            e -= 1;
        }
        if e > s && value[e - 1] == b')' {
            // Find the comment that ends here by scanning from s.
            let mut i = s;
            let mut found = None;
            while i < e {
                match value[i] {
                    b'"' => i = skip_quoted(value, i),
                    b'(' => {
                        let j = skip_comment(value, i);
                        if j == e {
                            found = Some(i);
                            break;
                        }
                        i = j;
                    }
                    _ => i += 1,
                }
            }
            match found {
                Some(f) => {
                    e = f;
                    continue;
                }
                None => break,
            }
        }
        break;
    }
    if s >= e {
        return;
    }
    let raw = &value[s..e];
    // A route (`@a,@b:`) in angle brackets: the address follows its colon.
    // The route is domain names only; anything else is left alone.
    let (s, raw) = match (angle.is_some(), raw.first()) {
        (true, Some(b'@')) => match raw.iter().position(|&b| b == b':') {
            Some(c)
                if raw[..c]
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b".-@,".contains(&b) || is_space(b)) =>
            {
                (s + c + 1, &raw[c + 1..])
            }
            _ => return,
        },
        _ => (s, raw),
    };
    // Anything inside the address that is not part of one: leave it.
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'"' => i = skip_quoted(raw, i),
            b'[' => i = skip_literal(raw, i),
            b'(' | b'<' | b'>' | b',' | b';' => return,
            b if is_space(b) => return,
            _ => i += 1,
        }
    }
    let Ok(text) = std::str::from_utf8(raw) else {
        return;
    };
    if text.is_empty() || text.bytes().any(|b| b.is_ascii_control()) {
        return;
    }
    out.push(Span {
        start: s,
        end: s + raw.len(),
        address: unquote(text),
    });
}

/// `"john doe"@example.com` -> `john doe@example.com`.
fn unquote(addr: &str) -> String {
    let (local, domain) = match addr.rfind('@') {
        Some(i) if addr[..i].starts_with('"') => (&addr[..i], &addr[i..]),
        None if addr.starts_with('"') => (addr, ""),
        _ => return addr.to_string(),
    };
    let inner = local
        .strip_prefix('"')
        .and_then(|l| l.strip_suffix('"'))
        .unwrap_or(local);
    let mut out = String::with_capacity(addr.len());
    let mut esc = false;
    for c in inner.chars() {
        if esc || c != '\\' {
            out.push(c);
            esc = false;
        } else {
            esc = true;
        }
    }
    out.push_str(domain);
    out
}

/// An internal-form address as it is written in a header: the local part
/// quoted when it needs to be (RFC 5322 dot-atom, or not).
pub fn quote(addr: &str) -> String {
    let (local, domain) = match addr.rfind('@') {
        Some(i) => (&addr[..i], &addr[i..]),
        None => (addr, ""),
    };
    let atext =
        |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii();
    let dot_atom = !local.is_empty()
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local.chars().all(|c| c == '.' || atext(c));
    if dot_atom {
        return addr.to_string();
    }
    let mut out = String::with_capacity(addr.len() + 2);
    out.push('"');
    for c in local.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out.push_str(domain);
    out
}

/// `value` with each span replaced by its new text (spans in order, not
/// overlapping, as [`addresses`] gives them).
pub fn replace(value: &[u8], edits: &[(Span, String)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 32);
    let mut at = 0;
    for (span, new) in edits {
        if span.start < at || span.end > value.len() {
            continue;
        }
        out.extend_from_slice(&value[at..span.start]);
        out.extend_from_slice(new.as_bytes());
        at = span.end;
    }
    out.extend_from_slice(&value[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(v: &str) -> Vec<String> {
        addresses(v.as_bytes())
            .into_iter()
            .map(|s| {
                assert_eq!(
                    &v[s.start..s.end],
                    quote(&s.address),
                    "span and address agree"
                );
                s.address
            })
            .collect()
    }

    #[test]
    fn finds_the_addresses_of_the_usual_forms() {
        assert_eq!(found(" alice@example.com"), ["alice@example.com"]);
        assert_eq!(
            found(" \"Smith, Alice\" <alice@example.com>, bob@example.org (Bob)"),
            ["alice@example.com", "bob@example.org"]
        );
        assert_eq!(found(" root"), ["root"]);
        assert_eq!(
            found(" Team: a@x.test, b@x.test;, c@y.test"),
            ["a@x.test", "b@x.test", "c@y.test"]
        );
        assert_eq!(found(" undisclosed-recipients:;"), Vec::<String>::new());
        assert_eq!(
            found(" (comment, with comma) <a@x.test>,\r\n\t<b@[192.0.2.1]>"),
            ["a@x.test", "b@[192.0.2.1]"]
        );
        assert_eq!(found(" <@relay.test:a@x.test>"), ["a@x.test"]);
        assert_eq!(found(" \"john doe\"@x.test"), ["john doe@x.test"]);
        // Not an address to touch: text with spaces and no brackets.
        assert_eq!(found(" John Doe"), Vec::<String>::new());
        assert_eq!(found(" <>"), Vec::<String>::new());
        assert_eq!(found(" <a@x.test"), Vec::<String>::new());
    }

    #[test]
    fn replacing_keeps_everything_else() {
        let v = b" \"Alice\" <alice@host.example.com> (work),\r\n bob";
        let spans = addresses(v);
        let edits: Vec<_> = spans
            .into_iter()
            .map(|s| {
                let new = if s.address == "bob" {
                    "bob@example.com".to_string()
                } else {
                    "alice@example.com".to_string()
                };
                (s, new)
            })
            .collect();
        assert_eq!(
            replace(v, &edits),
            b" \"Alice\" <alice@example.com> (work),\r\n bob@example.com".to_vec()
        );
        assert_eq!(quote("john doe@x.test"), "\"john doe\"@x.test");
        assert_eq!(quote("a.b+c@x.test"), "a.b+c@x.test");
    }
}
