//! Source text of `texthash:` tables and of `postern map build` input
//! (postmap's `key value` lines, postalias's `name: value`), and the
//! passwd file.
use std::collections::HashMap;

/// Parses a source file: `key value` (postmap) or `name: value` (aliases).
/// Every problem is reported with file:line; empty values are errors (L689).
pub fn parse_source(
    text: &str,
    file: &str,
    aliases: bool,
) -> Result<Vec<(String, String)>, Vec<String>> {
    let mut out: Vec<(String, String, usize)> = Vec::new();
    let mut errs = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        if raw.trim().is_empty() || raw.trim_start().starts_with('#') {
            continue;
        }
        if raw.starts_with([' ', '\t']) {
            match out.last_mut() {
                Some(last) => {
                    last.1.push(' ');
                    last.1.push_str(raw.trim());
                }
                None => errs.push(format!(
                    "{file}:{n}: continuation line without an entry before it"
                )),
            }
            continue;
        }
        let (key, value) = if aliases {
            match raw.split_once(':') {
                Some((k, v)) => (k.trim(), v.trim()),
                None => {
                    errs.push(format!("{file}:{n}: missing ':' after alias name"));
                    continue;
                }
            }
        } else {
            match raw.split_once([' ', '\t']) {
                Some((k, v)) => (k, v.trim()),
                None => (raw.trim(), ""),
            }
        };
        if key.is_empty() {
            errs.push(format!("{file}:{n}: empty key"));
            continue;
        }
        out.push((key.to_ascii_lowercase(), value.to_string(), n));
    }
    for (k, v, n) in &out {
        if v.trim_end_matches(',').trim().is_empty() {
            errs.push(format!("{file}:{n}: {k}: empty value"));
        }
    }
    if errs.is_empty() {
        Ok(out
            .into_iter()
            .map(|(k, v, _)| (k, v.trim_end_matches(',').trim().to_string()))
            .collect())
    } else {
        Err(errs)
    }
}

/// A `texthash:` table: `key value` lines (or `name: value`), keys folded
/// to lower case, the first entry for a key winning. Every problem is an
/// error with file:line, as for `postern map build`.
pub fn texthash(text: &str, file: &str) -> Result<HashMap<String, String>, Vec<String>> {
    let mut out = HashMap::new();
    let mut errs = Vec::new();
    let mut current: Option<(String, usize)> = None;
    let mut entries: Vec<(String, String, usize)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        if raw.trim().is_empty() || raw.trim_start().starts_with('#') {
            continue;
        }
        if raw.starts_with([' ', '\t']) {
            match entries.last_mut() {
                Some(last) if current.is_some() => {
                    last.1.push(' ');
                    last.1.push_str(raw.trim());
                }
                _ => errs.push(format!(
                    "{file}:{n}: continuation line without an entry before it"
                )),
            }
            continue;
        }
        // `key value` (postmap), or `name: value` (aliases): a colon ends
        // the key only right before the whitespace (or with no whitespace
        // at all), so keys like `[host]:587` keep theirs.
        let (k, v) = match raw.split_once([' ', '\t']) {
            Some((k, v)) => (k.strip_suffix(':').unwrap_or(k), v),
            None => raw.split_once(':').unwrap_or((raw, "")),
        };
        let k = k.trim().to_ascii_lowercase();
        if k.is_empty() {
            errs.push(format!("{file}:{n}: empty key"));
            continue;
        }
        current = Some((k.clone(), n));
        entries.push((k, v.trim().to_string(), n));
    }
    for (k, v, n) in entries {
        let v = v.trim_end_matches(',').trim().to_string();
        if v.is_empty() {
            errs.push(format!("{file}:{n}: {k}: empty value"));
            continue;
        }
        out.entry(k).or_insert(v);
    }
    if errs.is_empty() { Ok(out) } else { Err(errs) }
}

pub fn passwd_lookup(text: &str, user: &str) -> Option<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.split(':')
                .next()
                .is_some_and(|n| n.eq_ignore_ascii_case(user))
        })
        .map(str::to_string)
}
