//! Lookup tables in Postfix's `type:name` notation.
//!
//! Supported: `unix:passwd.byname`, `cdb:/path` (reads `/path.cdb`),
//! `texthash:/path`, `inline:{ key=value, ... }` and `static:value`. A
//! `proxy:` prefix is accepted and ignored: in Postern every jailed daemon
//! reaches tables through the broker anyway. Keys are matched
//! case-insensitively (lowercased), as Postfix does for most tables.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Table {
    Passwd,
    Cdb(PathBuf),
    TextHash(PathBuf),
    Inline(HashMap<String, String>),
    Static(String),
}

/// Parses one table reference. Relative paths are refused (L157).
pub fn parse(spec: &str) -> Result<Table, String> {
    let spec = spec.strip_prefix("proxy:").unwrap_or(spec);
    let (kind, name) = spec
        .split_once(':')
        .ok_or_else(|| format!("\"{spec}\": expected type:name"))?;
    let path = || {
        if name.starts_with('/') {
            Ok(PathBuf::from(name))
        } else {
            Err(format!("\"{spec}\": table paths must be absolute"))
        }
    };
    match kind {
        "unix" if name == "passwd.byname" => Ok(Table::Passwd),
        "cdb" | "hash" | "lmdb" | "btree" => Ok(Table::Cdb(path()?)),
        "texthash" => Ok(Table::TextHash(path()?)),
        "static" => Ok(Table::Static(
            name.trim_matches(['{', '}']).trim().to_string(),
        )),
        "inline" => {
            let inner = name
                .trim()
                .strip_prefix('{')
                .and_then(|s| s.strip_suffix('}'))
                .ok_or_else(|| format!("\"{spec}\": expected inline:{{ key=value, ... }}"))?;
            let mut map = HashMap::new();
            for kv in inner.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| format!("\"{kv}\": expected key=value"))?;
                if v.trim().is_empty() {
                    return Err(format!("\"{kv}\": empty value"));
                }
                map.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
            Ok(Table::Inline(map))
        }
        other => Err(format!("\"{spec}\": unsupported table type {other}")),
    }
}

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

/// A user list such as `authorized_mailq_users`: login names, `!name`,
/// `static:anyone`, or tables keyed by login name, read directly (for the
/// unjailed master). The first match decides; no match refuses.
pub fn user_listed(list: &[String], login: &str) -> Result<bool, String> {
    user_listed_with(list, login, |t| t.lookup(login))
}

/// [`user_listed`] with the table lookups done by `lookup` (a jailed
/// daemon reads tables through the master, so it answers from lookups it
/// made beforehand).
pub fn user_listed_with(
    list: &[String],
    login: &str,
    mut lookup: impl FnMut(&Table) -> Result<Option<String>, String>,
) -> Result<bool, String> {
    for item in list {
        if let Some(name) = item.strip_prefix('!') {
            if name.eq_ignore_ascii_case(login) {
                return Ok(false);
            }
            continue;
        }
        if item.contains(':') {
            match parse(item)? {
                Table::Static(v) if v == "anyone" => return Ok(true),
                Table::Static(_) => continue,
                t => {
                    if lookup(&t)?.is_some() {
                        return Ok(true);
                    }
                    continue;
                }
            }
        }
        if item.eq_ignore_ascii_case(login) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Parameters whose values are lists of tables.
pub const TABLE_PARAMS: &[&str] = &[
    "local_recipient_maps",
    "alias_maps",
    "alias_database",
    "transport_maps",
    "smtpd_sender_login_maps",
    "smtp_sasl_password_maps",
];

/// Tables holding secrets: opened for the broker only.
const SECRET_PARAMS: &[&str] = &["smtp_sasl_password_maps"];

/// Every table file the configuration names: the only files the master
/// opens for a jailed daemon.
pub fn configured_files(params: &crate::Params) -> Vec<PathBuf> {
    files_of(params, TABLE_PARAMS.iter())
}

fn files_of<'a>(params: &crate::Params, names: impl Iterator<Item = &'a &'a str>) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = names
        .flat_map(|p| params.list(p).unwrap_or_default())
        .filter_map(|spec| parse(&spec).ok()?.file())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The table files a role may have the master open for it.
pub fn allowed_files(role: crate::Role, params: &crate::Params) -> Vec<PathBuf> {
    use crate::Role;
    let mut v = match role {
        Role::Broker => configured_files(params),
        Role::Qmgr | Role::Local => files_of(
            params,
            TABLE_PARAMS.iter().filter(|p| !SECRET_PARAMS.contains(p)),
        ),
        // pickup: who may submit and as whom, and the smtpd restrictions.
        Role::Pickup => files_of(
            params,
            [
                "authorized_submit_users",
                "local_login_sender_maps",
                "smtpd_sender_login_maps",
            ]
            .iter(),
        ),
        _ => Vec::new(),
    };
    if matches!(role, Role::Local | Role::Pickup) {
        // local checks that users exist whatever local_recipient_maps says;
        // pickup turns uids into login names.
        v.push(PathBuf::from("/etc/passwd"));
    }
    v
}

impl Table {
    /// The file this table reads, if it reads one.
    pub fn file(&self) -> Option<PathBuf> {
        match self {
            Table::Passwd => Some(PathBuf::from("/etc/passwd")),
            Table::TextHash(p) => Some(p.clone()),
            Table::Cdb(p) => {
                let mut f = p.clone().into_os_string();
                f.push(".cdb");
                Some(PathBuf::from(f))
            }
            Table::Inline(_) | Table::Static(_) => None,
        }
    }

    /// Looks `key` up in `data`, the contents of [`Table::file`] (None: the
    /// file does not exist, an empty table).
    pub fn lookup_in(&self, key: &str, data: Option<&[u8]>) -> Result<Option<String>, String> {
        let key = key.to_ascii_lowercase();
        match self {
            Table::Passwd => {
                Ok(data.and_then(|d| passwd_lookup(&String::from_utf8_lossy(d), &key)))
            }
            Table::TextHash(_) => {
                Ok(data.and_then(|d| texthash_lookup(&String::from_utf8_lossy(d), &key)))
            }
            Table::Cdb(_) => {
                let Some(d) = data else { return Ok(None) };
                cdb::get(d, key.as_bytes())
                    .map(|v| v.map(|v| String::from_utf8_lossy(v).into_owned()))
                    .map_err(|e| format!("{}: {e}", self.file().unwrap_or_default().display()))
            }
            Table::Inline(m) => Ok(m.get(&key).cloned()),
            Table::Static(v) => Ok(Some(v.clone())),
        }
    }

    /// Looks `key` up reading the file directly (commands, not daemons).
    pub fn lookup(&self, key: &str) -> Result<Option<String>, String> {
        let data = match self.file() {
            Some(f) => read(&f)?,
            None => None,
        };
        self.lookup_in(key, data.as_deref())
    }
}

fn read_bytes_capped(p: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(p)?
        .take(cap.saturating_add(1))
        .read_to_end(&mut buf)?;
    if buf.len() as u64 > cap {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("larger than {cap} bytes"),
        ));
    }
    Ok(buf)
}

fn read(p: &Path) -> Result<Option<Vec<u8>>, String> {
    match read_bytes_capped(p, crate::TABLE_FILE_CAP) {
        Ok(d) => Ok(Some(d)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

fn passwd_lookup(text: &str, user: &str) -> Option<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.split(':')
                .next()
                .is_some_and(|n| n.eq_ignore_ascii_case(user))
        })
        .map(str::to_string)
}

/// `key value` lines; `#` comments; continuation lines start with space.
fn texthash_lookup(text: &str, key: &str) -> Option<String> {
    let mut found: Option<String> = None;
    let mut current: Option<bool> = None;
    for line in text.lines() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if current == Some(true)
                && let Some(f) = found.as_mut()
            {
                f.push(' ');
                f.push_str(line.trim());
            }
            continue;
        }
        // `key value` (postmap), or `name: value` (aliases): a colon ends
        // the key only right before the whitespace (or with no whitespace
        // at all), so keys like `[host]:587` keep theirs.
        let (k, v) = match line.split_once([' ', '\t']) {
            Some((k, v)) => (k.strip_suffix(':').unwrap_or(k), v),
            None => line.split_once(':').unwrap_or((line, "")),
        };
        let hit = k.trim().eq_ignore_ascii_case(key) && found.is_none();
        current = Some(hit);
        if hit {
            found = Some(v.trim().to_string());
        }
    }
    found
}

/// The constant database format (D. J. Bernstein's cdb), reader and writer.
/// Postern reads it from memory, so a table can also come as a descriptor.
pub mod cdb {
    const HEADER: usize = 2048;

    fn hash(key: &[u8]) -> u32 {
        let mut h: u32 = 5381;
        for &c in key {
            h = (h << 5).wrapping_add(h) ^ u32::from(c);
        }
        h
    }

    fn u32_at(d: &[u8], pos: usize) -> Result<u32, String> {
        d.get(pos..pos + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| "truncated cdb file".to_string())
    }

    /// The value of the first record with `key`, bounds-checked throughout.
    pub fn get<'a>(d: &'a [u8], key: &[u8]) -> Result<Option<&'a [u8]>, String> {
        if d.len() < HEADER {
            return Err("truncated cdb file".into());
        }
        let h = hash(key);
        let slot = (h as usize & 255) * 8;
        let (tpos, tlen) = (u32_at(d, slot)? as usize, u32_at(d, slot + 4)? as usize);
        if tlen == 0 {
            return Ok(None);
        }
        let start = (h as usize >> 8) % tlen;
        for i in 0..tlen {
            let e = tpos + ((start + i) % tlen) * 8;
            let (eh, rpos) = (u32_at(d, e)?, u32_at(d, e + 4)? as usize);
            if rpos == 0 {
                return Ok(None);
            }
            if eh != h {
                continue;
            }
            let (klen, vlen) = (u32_at(d, rpos)? as usize, u32_at(d, rpos + 4)? as usize);
            let k = d
                .get(rpos + 8..rpos + 8 + klen)
                .ok_or("truncated cdb record")?;
            if k == key {
                return d
                    .get(rpos + 8 + klen..rpos + 8 + klen + vlen)
                    .map(Some)
                    .ok_or_else(|| "truncated cdb record".into());
            }
        }
        Ok(None)
    }

    /// Builds a cdb image from (key, value) pairs.
    pub fn build(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        let mut out = vec![0u8; HEADER];
        let mut buckets: Vec<Vec<(u32, u32)>> = vec![Vec::new(); 256];
        for (k, v) in pairs {
            let pos = out.len() as u32;
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(k);
            out.extend_from_slice(v);
            let h = hash(k);
            buckets[(h & 255) as usize].push((h, pos));
        }
        let mut header = Vec::with_capacity(HEADER);
        for b in &buckets {
            let tlen = b.len() * 2;
            let tpos = out.len() as u32;
            let mut table = vec![(0u32, 0u32); tlen];
            for &(h, pos) in b {
                let mut i = ((h >> 8) as usize) % tlen;
                while table[i].1 != 0 {
                    i = (i + 1) % tlen;
                }
                table[i] = (h, pos);
            }
            for (h, pos) in table {
                out.extend_from_slice(&h.to_le_bytes());
                out.extend_from_slice(&pos.to_le_bytes());
            }
            header.extend_from_slice(&tpos.to_le_bytes());
            header.extend_from_slice(&(tlen as u32).to_le_bytes());
        }
        out[..HEADER].copy_from_slice(&header);
        out
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn round_trip() {
            let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..500)
                .map(|i| {
                    (
                        format!("key{i}").into_bytes(),
                        format!("value{i}").into_bytes(),
                    )
                })
                .collect();
            let img = super::build(&pairs);
            for (k, v) in &pairs {
                assert_eq!(super::get(&img, k).unwrap(), Some(v.as_slice()));
            }
            assert_eq!(super::get(&img, b"missing").unwrap(), None);
            assert!(super::get(&img[..100], b"x").is_err());
            assert_eq!(super::get(&super::build(&[]), b"x").unwrap(), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!(parse("proxy:unix:passwd.byname").unwrap(), Table::Passwd);
        assert!(parse("cdb:relative/path").is_err());
        assert!(parse("nis:x").is_err());
        let t = parse("inline:{ Postmaster=root, abuse = root }").unwrap();
        assert_eq!(t.lookup("POSTMASTER").unwrap().as_deref(), Some("root"));
        assert!(parse("inline:{ a= }").is_err());
    }

    #[test]
    fn user_lists() {
        let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(user_listed(&l(&["static:anyone"]), "bob").unwrap());
        assert!(!user_listed(&l(&["!bob", "static:anyone"]), "bob").unwrap());
        assert!(user_listed(&l(&["!bob", "static:anyone"]), "alice").unwrap());
        assert!(user_listed(&l(&["root", "Alice"]), "alice").unwrap());
        assert!(!user_listed(&l(&["root"]), "alice").unwrap());
        assert!(user_listed(&l(&["inline:{ alice=yes }"]), "alice").unwrap());
        assert!(!user_listed(&l(&[]), "alice").unwrap());
        assert!(user_listed(&l(&["cdb:relative"]), "alice").is_err());
    }

    #[test]
    fn texthash_and_passwd() {
        let t = "# c\nroot admin\npostmaster: root,\n  other\n";
        assert_eq!(
            texthash_lookup(t, "postmaster").as_deref(),
            Some("root, other")
        );
        assert_eq!(texthash_lookup(t, "nobody"), None);
        // Keys with a colon inside (smtp_sasl_password_maps), and the
        // aliases form without a space.
        let t = "[mx.example]:587 user:pass word
root:admin
";
        assert_eq!(
            texthash_lookup(t, "[mx.example]:587").as_deref(),
            Some("user:pass word")
        );
        assert_eq!(texthash_lookup(t, "root").as_deref(), Some("admin"));
        assert!(passwd_lookup("root:x:0:0::/root:/bin/sh\n", "root").is_some());
        assert_eq!(
            Table::Cdb("/nonexistent/aliases".into())
                .lookup("x")
                .unwrap(),
            None
        );
    }
}
