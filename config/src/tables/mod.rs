//! Lookup tables in Postfix's `type:name` notation.
//!
//! Types: `unix:passwd.byname`; `cdb:/path` (and `hash:`, `lmdb:`,
//! `btree:`, which read the `/path.cdb` that `postern map build` writes);
//! `texthash:/path`; `cidr:`, `regexp:` and `pcre:` files or their inline
//! `{ {rule}, {rule} }` forms; `inline:{ key=value, { key = text } }`;
//! `static:value`; `unionmap:{ table, table }` (every table's result,
//! comma-joined) and `pipemap:{ table, table }` (each result is the next
//! table's key). A `proxy:` prefix is accepted and ignored: in Postern
//! every jailed daemon reaches tables through the master anyway.
//!
//! Keys are folded to lower case for the indexed types (cdb, texthash,
//! inline, passwd), as postmap does; the pattern types see the key as it
//! is and fold case by their own flags.
//!
//! A table that cannot be read is a lookup error, never an empty table.
pub mod cdb;
mod cidr;
pub(crate) mod lines;
mod regex;
mod source;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use cidr::CidrTable;
pub use regex::{Dialect, RegexTable};
pub use source::parse_source;

/// How a table file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    Passwd,
    Cdb,
    TextHash,
    Cidr,
    Regexp,
    Pcre,
}

/// A table file's contents, parsed once and shared by lookups until the
/// file changes.
#[derive(Debug)]
pub enum Loaded {
    Passwd(String),
    Cdb(Vec<u8>),
    TextHash(HashMap<String, String>),
    Cidr(CidrTable),
    Regex(RegexTable),
}

/// Parses a table file's bytes. Errors name `file` and the line.
pub fn load(format: Format, data: Vec<u8>, file: &str) -> Result<Loaded, Vec<String>> {
    let text = || {
        String::from_utf8(data.clone()).map_err(|e| {
            let upto = &data[..e.utf8_error().valid_up_to()];
            let line = upto.iter().filter(|&&b| b == b'\n').count() + 1;
            vec![format!("{file}:{line}: the text is not UTF-8")]
        })
    };
    Ok(match format {
        Format::Passwd => Loaded::Passwd(String::from_utf8_lossy(&data).into_owned()),
        Format::Cdb => {
            cdb::check(&data).map_err(|e| vec![format!("{file}: {e}")])?;
            Loaded::Cdb(data)
        }
        Format::TextHash => Loaded::TextHash(source::texthash(&text()?, file)?),
        Format::Cidr => Loaded::Cidr(CidrTable::parse(&text()?, file)?),
        Format::Regexp => Loaded::Regex(RegexTable::parse(Dialect::Posix, &text()?, file)?),
        Format::Pcre => Loaded::Regex(RegexTable::parse(Dialect::Pcre, &text()?, file)?),
    })
}

/// Where a pattern table's rules come from.
#[derive(Debug, Clone)]
pub enum Rules {
    File(PathBuf),
    /// `cidr:{ {rule}, ... }`: parsed when the reference was.
    Inline(Arc<Loaded>),
}

#[derive(Debug, Clone)]
pub enum Table {
    Passwd,
    Cdb(PathBuf),
    TextHash(PathBuf),
    Cidr(Rules),
    Regexp(Rules),
    Pcre(Rules),
    Inline(HashMap<String, String>),
    Static(String),
    Union(Vec<Table>),
    Pipe(Vec<Table>),
    /// `tcp:host:port` (tcp_table(5)), looked up by the proxymap role.
    Tcp(Endpoint),
    /// `socketmap:inet:host:port:name` or `socketmap:unix:/path:name`.
    Socketmap(Endpoint, String),
}

/// Where an external table server listens. Hosts are IP addresses (or
/// localhost): no daemon but the resolver asks DNS.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    Inet(std::net::SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Inet(a) => write!(f, "inet:{a}"),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// `host:port` or `[v6]:port`, the host an IP address or localhost.
pub(crate) fn inet(spec: &str, text: &str) -> Result<std::net::SocketAddr, String> {
    let (host, port) = match text.strip_prefix('[') {
        Some(rest) => rest
            .split_once("]:")
            .ok_or_else(|| format!("\"{spec}\": expected [address]:port"))?,
        None => text
            .rsplit_once(':')
            .ok_or_else(|| format!("\"{spec}\": expected host:port"))?,
    };
    let port: u16 = port
        .parse()
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| format!("\"{spec}\": bad port \"{port}\""))?;
    let ip: std::net::IpAddr = if host == "localhost" {
        std::net::Ipv4Addr::LOCALHOST.into()
    } else {
        host.parse().map_err(|_| {
            format!("\"{spec}\": \"{host}\" is not an IP address (Postern looks table servers up by address, not by name)")
        })?
    };
    Ok(std::net::SocketAddr::new(ip, port))
}

/// Table types Postfix has that Postern does not (yet): a reference to one
/// is a configuration error that says so, not an unknown type.
const POSTFIX_ONLY: &[&str] = &[
    "ldap",
    "mysql",
    "pgsql",
    "sqlite",
    "memcache",
    "nis",
    "nisplus",
    "netinfo",
    "dbm",
    "sdbm",
    "environ",
    "fail",
    "randmap",
    "internal",
    "tcp",
    "socketmap",
];

/// The items of a `{ ... }` list: split on commas and whitespace outside
/// nested braces; a braced item loses its braces and outer whitespace.
fn brace_items(inner: &str) -> Vec<String> {
    crate::value::split_list(inner)
        .into_iter()
        .map(
            |item| match item.strip_prefix('{').and_then(|i| i.strip_suffix('}')) {
                Some(i) => i.trim().to_string(),
                None => item,
            },
        )
        .collect()
}

fn braced<'a>(spec: &str, name: &'a str) -> Result<&'a str, String> {
    name.trim()
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .ok_or_else(|| format!("\"{spec}\": expected {{ ... }}"))
}

/// The member references of a `unionmap:{ ... }` reference, as written.
pub fn union_members(spec: &str) -> Option<Vec<String>> {
    let name = spec
        .strip_prefix("proxy:")
        .unwrap_or(spec)
        .strip_prefix("unionmap:")?;
    braced(spec, name).ok().map(brace_items)
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
    let rules = |format: Format| -> Result<Rules, String> {
        if !name.trim_start().starts_with('{') {
            return path().map(Rules::File);
        }
        let text: String = brace_items(braced(spec, name)?)
            .into_iter()
            .map(|r| r + "\n")
            .collect();
        let data = text.into_bytes();
        load(format, data, &format!("{kind}:{{...}}"))
            .map(|l| Rules::Inline(Arc::new(l)))
            .map_err(|e| e.join("; "))
    };
    match kind {
        "unix" if name == "passwd.byname" => Ok(Table::Passwd),
        "cdb" | "hash" | "lmdb" | "btree" => Ok(Table::Cdb(path()?)),
        "texthash" => Ok(Table::TextHash(path()?)),
        "cidr" => Ok(Table::Cidr(rules(Format::Cidr)?)),
        "regexp" => Ok(Table::Regexp(rules(Format::Regexp)?)),
        "pcre" => Ok(Table::Pcre(rules(Format::Pcre)?)),
        "static" => {
            let v = match name.trim_start().strip_prefix('{') {
                Some(_) => braced(spec, name)?.trim(),
                None => name,
            };
            Ok(Table::Static(v.to_string()))
        }
        "inline" => {
            let mut map = HashMap::new();
            for kv in brace_items(braced(spec, name)?) {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| format!("\"{kv}\": expected key=value"))?;
                let (k, v) = (k.trim(), v.trim());
                if k.is_empty() || v.is_empty() {
                    return Err(format!("\"{kv}\": expected key=value"));
                }
                map.entry(k.to_ascii_lowercase())
                    .or_insert_with(|| v.to_string());
            }
            if map.is_empty() {
                return Err(format!("\"{spec}\": an empty inline table"));
            }
            Ok(Table::Inline(map))
        }
        "unionmap" | "pipemap" => {
            let items = brace_items(braced(spec, name)?);
            if items.is_empty() {
                return Err(format!("\"{spec}\": no tables"));
            }
            let tables = items
                .iter()
                .map(|t| parse(t))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(if kind == "unionmap" {
                Table::Union(tables)
            } else {
                Table::Pipe(tables)
            })
        }
        "tcp" => Ok(Table::Tcp(Endpoint::Inet(inet(spec, name)?))),
        "socketmap" => {
            let (endpoint, map) = name
                .rsplit_once(':')
                .ok_or_else(|| format!("\"{spec}\": expected socketmap:inet:host:port:name or socketmap:unix:/path:name"))?;
            if map.is_empty() || map.contains(char::is_whitespace) {
                return Err(format!("\"{spec}\": bad socketmap name \"{map}\""));
            }
            let endpoint = if let Some(addr) = endpoint.strip_prefix("inet:") {
                Endpoint::Inet(inet(spec, addr)?)
            } else if let Some(path) = endpoint.strip_prefix("unix:") {
                if !path.starts_with('/') {
                    return Err(format!("\"{spec}\": socket paths must be absolute"));
                }
                Endpoint::Unix(PathBuf::from(path))
            } else {
                return Err(format!(
                    "\"{spec}\": expected inet: or unix: after socketmap:"
                ));
            };
            Ok(Table::Socketmap(endpoint, map.to_string()))
        }
        other if POSTFIX_ONLY.contains(&other) => Err(format!(
            "\"{spec}\": the {other}: table type is not supported by Postern"
        )),
        "unix" => Err(format!(
            "\"{spec}\": only unix:passwd.byname is supported by Postern"
        )),
        other => Err(format!("\"{spec}\": unknown table type {other}")),
    }
}

/// A loaded file as a lookup sees it.
pub type Files<'a> = dyn FnMut(&Path, Format) -> Result<Arc<Loaded>, String> + 'a;

/// An external table's answer for a key.
pub type Remote<'a> = dyn FnMut(&Table, &str) -> Result<Option<String>, String> + 'a;

impl Table {
    /// Every file this table reads, with how it is read.
    /// Whether partial keys (parent domains, `user@`, shorter networks)
    /// are looked up in this table: Postfix's DICT_FLAG_FIXED. Pattern
    /// tables (cidr, regexp, pcre) and servers (tcp, socketmap) get only
    /// the full key.
    pub fn fixed(&self) -> bool {
        match self {
            Table::Passwd
            | Table::Cdb(_)
            | Table::TextHash(_)
            | Table::Inline(_)
            | Table::Static(_) => true,
            Table::Union(m) => m.iter().all(Table::fixed),
            Table::Cidr(_)
            | Table::Regexp(_)
            | Table::Pcre(_)
            | Table::Pipe(_)
            | Table::Tcp(_)
            | Table::Socketmap(..) => false,
        }
    }

    pub fn files(&self) -> Vec<(PathBuf, Format)> {
        let file = |p: &Path, f: Format| vec![(p.to_path_buf(), f)];
        match self {
            Table::Passwd => file(Path::new("/etc/passwd"), Format::Passwd),
            Table::TextHash(p) => file(p, Format::TextHash),
            Table::Cdb(p) => file(&with_suffix(p, ".cdb"), Format::Cdb),
            Table::Cidr(Rules::File(p)) => file(p, Format::Cidr),
            Table::Regexp(Rules::File(p)) => file(p, Format::Regexp),
            Table::Pcre(Rules::File(p)) => file(p, Format::Pcre),
            Table::Union(v) | Table::Pipe(v) => v.iter().flat_map(Table::files).collect(),
            Table::Cidr(_)
            | Table::Regexp(_)
            | Table::Pcre(_)
            | Table::Inline(_)
            | Table::Static(_)
            | Table::Tcp(_)
            | Table::Socketmap(..) => Vec::new(),
        }
    }

    /// Every external table (tcp:, socketmap:) in this one, unionmap and
    /// pipemap included.
    pub fn remotes(&self) -> Vec<&Table> {
        match self {
            Table::Tcp(_) | Table::Socketmap(..) => vec![self],
            Table::Union(v) | Table::Pipe(v) => v.iter().flat_map(Table::remotes).collect(),
            _ => Vec::new(),
        }
    }

    /// The reference as the configuration writes it (for external tables,
    /// the name proxymap knows them by).
    pub fn spec(&self) -> Option<String> {
        match self {
            Table::Tcp(Endpoint::Inet(a)) => Some(format!("tcp:{a}")),
            Table::Tcp(Endpoint::Unix(_)) => None,
            Table::Socketmap(e, m) => Some(format!("socketmap:{e}:{m}")),
            _ => None,
        }
    }

    /// The one file a simple table reads (None for inline forms and for
    /// unionmap/pipemap).
    pub fn file(&self) -> Option<PathBuf> {
        match self {
            Table::Union(_) | Table::Pipe(_) => None,
            t => t.files().pop().map(|(p, _)| p),
        }
    }

    /// Looks `key` up, with `files` giving each file's parsed contents (or
    /// the error that makes this a lookup error). External tables are a
    /// lookup error here: daemons ask proxymap, see [`Table::lookup_full`].
    pub fn lookup_with(&self, key: &str, files: &mut Files<'_>) -> Result<Option<String>, String> {
        self.lookup_full(key, files, &mut |t, _| {
            Err(format!(
                "{}: an external table is looked up through proxymap",
                t.spec().unwrap_or_default()
            ))
        })
    }

    /// [`Table::lookup_with`], with `remote` answering for tcp: and
    /// socketmap: tables.
    pub fn lookup_full(
        &self,
        key: &str,
        files: &mut Files<'_>,
        remote: &mut Remote<'_>,
    ) -> Result<Option<String>, String> {
        let folded = || key.to_ascii_lowercase();
        let rules = |r: &Rules, f: Format, files: &mut Files<'_>| -> Result<Arc<Loaded>, String> {
            match r {
                Rules::File(p) => files(p, f),
                Rules::Inline(l) => Ok(l.clone()),
            }
        };
        let loaded = match self {
            Table::Inline(m) => return Ok(m.get(&folded()).cloned()),
            Table::Static(v) => return Ok(Some(v.clone())),
            Table::Union(v) => {
                let mut hits = Vec::new();
                for t in v {
                    if let Some(r) = t.lookup_full(key, files, remote)? {
                        hits.push(r);
                    }
                }
                return Ok((!hits.is_empty()).then(|| hits.join(",")));
            }
            Table::Pipe(v) => {
                let mut k = key.to_string();
                for t in v {
                    match t.lookup_full(&k, files, remote)? {
                        Some(r) => k = r,
                        None => return Ok(None),
                    }
                }
                return Ok(Some(k));
            }
            Table::Tcp(_) | Table::Socketmap(..) => return remote(self, key),
            Table::Cidr(r) => rules(r, Format::Cidr, files)?,
            Table::Regexp(r) => rules(r, Format::Regexp, files)?,
            Table::Pcre(r) => rules(r, Format::Pcre, files)?,
            t => {
                let (p, f) = t.files().pop().ok_or("a table without a file")?;
                files(&p, f)?
            }
        };
        Ok(match &*loaded {
            Loaded::Passwd(text) => source::passwd_lookup(text, &folded()),
            Loaded::TextHash(m) => m.get(&folded()).cloned(),
            Loaded::Cdb(d) => cdb::get(d, folded().as_bytes())
                .map_err(|e| format!("{}: {e}", self.file().unwrap_or_default().display()))?
                .map(|v| String::from_utf8_lossy(v).into_owned()),
            Loaded::Cidr(c) => c.lookup(key).map(str::to_string),
            Loaded::Regex(r) => r.lookup(key),
        })
    }

    /// Looks `key` up reading the files directly (commands and the
    /// unjailed master, not daemons).
    pub fn lookup(&self, key: &str) -> Result<Option<String>, String> {
        self.lookup_with(key, &mut |p, f| read_and_load(p, f).map(Arc::new))
    }

    /// Reads and parses every file this table needs: the check that
    /// `postern conf --check` and `postern start` make.
    pub fn check_files(&self) -> Vec<String> {
        let mut errs = Vec::new();
        for (p, f) in self.files() {
            if let Err(e) = read_and_load(&p, f) {
                errs.push(e);
            }
        }
        errs
    }
}

pub fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Reads a table file (missing: an error, as in Postfix) and parses it.
pub fn read_and_load(p: &Path, f: Format) -> Result<Loaded, String> {
    let data = read_bytes_capped(p, crate::TABLE_FILE_CAP)
        .map_err(|e| format!("open {}: {}", p.display(), io_text(&e)))?;
    load(f, data, &p.display().to_string()).map_err(|e| e.join("; "))
}

/// An I/O error as strerror words it ("No such file or directory").
pub fn io_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
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

/// A user list such as `authorized_mailq_users`: login names, `!name`,
/// `static:anyone`, or tables keyed by login name, read directly (for the
/// unjailed master). The first match decides; no match refuses.
pub fn user_listed(list: &[String], login: &str) -> Result<bool, String> {
    user_listed_with(list, login, |_, t| t.lookup(login))
}

/// [`user_listed`] with the table lookups done by `lookup` (a jailed
/// daemon reads tables through the master, so it answers from lookups it
/// made beforehand).
pub fn user_listed_with(
    list: &[String],
    login: &str,
    mut lookup: impl FnMut(&str, &Table) -> Result<Option<String>, String>,
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
                    if lookup(item, &t)?.is_some() {
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

/// Parameters whose values are lists of tables (with [`REWRITE_PARAMS`]).
pub const TABLE_PARAMS: &[&str] = &[
    "header_checks",
    "mime_header_checks",
    "nested_header_checks",
    "body_checks",
    "local_recipient_maps",
    "relay_recipient_maps",
    "postern_access_maps",
    "alias_maps",
    "alias_database",
    "transport_maps",
    "address_verify_transport_maps",
    "smtpd_sender_login_maps",
    "smtp_sasl_password_maps",
    "smtp_tls_policy_maps",
    "lmtp_tls_policy_maps",
    "dkim_signing_table",
    "dkim_key_table",
];

/// The routing tables (qmgr's; smtpd's recipient checks ask the
/// virtual mailbox ones too), and smtp_generic_maps (the broker answers
/// the smtp client from it).
pub const ROUTING_PARAMS: &[&str] = &[
    "virtual_mailbox_maps",
    "virtual_mailbox_domains",
    "sender_dependent_relayhost_maps",
    "sender_dependent_default_transport_maps",
    "relocated_maps",
    "smtp_generic_maps",
];

/// The address rewriting tables (cleanup's; smtpd's recipient checks and
/// qmgr's routing ask virtual_alias_maps and virtual_alias_domains too).
pub const REWRITE_PARAMS: &[&str] = &[
    "canonical_maps",
    "sender_canonical_maps",
    "recipient_canonical_maps",
    "sender_bcc_maps",
    "recipient_bcc_maps",
    "virtual_alias_maps",
    "virtual_alias_domains",
];

/// Every parameter whose value may name tables (the lookups of every
/// role, pickup's included), with [`REWRITE_PARAMS`].
pub const LOOKUP_PARAMS: &[&str] = &[
    "local_recipient_maps",
    "relay_recipient_maps",
    "postern_access_maps",
    "alias_maps",
    "alias_database",
    "transport_maps",
    "address_verify_transport_maps",
    "smtpd_sender_login_maps",
    "smtp_sasl_password_maps",
    "smtp_tls_policy_maps",
    "lmtp_tls_policy_maps",
    "local_login_sender_maps",
    "authorized_submit_users",
];

/// Every external table the configuration names, by its canonical name
/// ([`Table::spec`]).
pub fn remote_tables(params: &crate::Params) -> std::collections::BTreeMap<String, Table> {
    let mut out = std::collections::BTreeMap::new();
    for name in LOOKUP_PARAMS
        .iter()
        .chain(REWRITE_PARAMS)
        .chain(ROUTING_PARAMS)
    {
        for item in params.list(name).unwrap_or_default() {
            if let Ok(t) = parse(&item) {
                for r in t.remotes() {
                    if let Some(spec) = r.spec() {
                        out.insert(spec, r.clone());
                    }
                }
            }
        }
    }
    out
}

/// Tables only smtpd's checks read (the broker answers them): qmgr and
/// local never open them.
const SMTPD_ONLY_PARAMS: &[&str] = &[
    "relay_recipient_maps",
    "postern_access_maps",
    "header_checks",
    "mime_header_checks",
    "nested_header_checks",
    "body_checks",
];

/// The content inspection tables (cleanup's).
pub const CONTENT_PARAMS: &[&str] = &[
    "header_checks",
    "mime_header_checks",
    "nested_header_checks",
    "body_checks",
];

/// Tables holding secrets: opened for the broker only.
/// The DKIM tables too: only the broker signs, and no other role needs to
/// know which keys exist.
const SECRET_PARAMS: &[&str] = &[
    "smtp_sasl_password_maps",
    "dkim_signing_table",
    "dkim_key_table",
];

/// Every table file the configuration names: the only files the master
/// opens for a jailed daemon.
pub fn configured_files(params: &crate::Params) -> Vec<PathBuf> {
    files_of(
        params,
        TABLE_PARAMS
            .iter()
            .chain(REWRITE_PARAMS)
            .chain(ROUTING_PARAMS),
    )
}

fn files_of<'a>(params: &crate::Params, names: impl Iterator<Item = &'a &'a str>) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = names
        .flat_map(|p| params.list(p).unwrap_or_default())
        .filter_map(|spec| parse(&spec).ok())
        .flat_map(|t| t.files().into_iter().map(|(p, _)| p))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The transport parameters whose value may be an `lmtp:` next hop.
pub const TRANSPORT_PARAMS: &[&str] = &[
    "local_transport",
    "virtual_transport",
    "relay_transport",
    "default_transport",
];

/// The trust-anchor files `tafile=` names in smtp_tls_policy_maps and
/// lmtp_tls_policy_maps (in the parameters' inline tables and in their
/// table files as they are now), which the smtp client may have the
/// master open for it.
pub fn tafile_paths(params: &crate::Params) -> Vec<PathBuf> {
    let mut texts: Vec<Vec<u8>> = Vec::new();
    let specs = ["smtp_tls_policy_maps", "lmtp_tls_policy_maps"]
        .iter()
        .flat_map(|n| params.list(n).unwrap_or_default());
    for spec in specs {
        texts.push(spec.as_bytes().to_vec());
        if let Ok(t) = parse(&spec) {
            for (p, _) in t.files() {
                if let Ok(d) = std::fs::read(&p) {
                    texts.push(d);
                }
            }
        }
    }
    marked_paths(&texts, b"tafile=")
}

/// Absolute paths right after `mark` in `texts` (up to white space, a
/// comma or a closing brace), without `$` substitutions.
fn marked_paths(texts: &[Vec<u8>], mark: &[u8]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for t in texts {
        let mut at = 0;
        while let Some(i) = t[at..].windows(mark.len()).position(|w| w == mark) {
            let start = at + i + mark.len();
            let end = t[start..]
                .iter()
                .position(|&b| {
                    b.is_ascii_whitespace() || b.is_ascii_control() || b == b',' || b == b'}'
                })
                .map_or(t.len(), |e| start + e);
            if let Ok(p) = std::str::from_utf8(&t[start..end])
                && p.starts_with('/')
                && !p.contains('$')
            {
                out.push(PathBuf::from(p));
            }
            at = end;
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Every `lmtp:unix:` socket the configuration names: in a transport
/// parameter, or as a value in a transport_maps table (read from the
/// table's file as it is now, or an inline table's text). A path with a
/// `$` (a regexp substitution) is never one: the socket must be written
/// out.
pub fn lmtp_sockets(params: &crate::Params) -> Vec<PathBuf> {
    let mut texts: Vec<Vec<u8>> = TRANSPORT_PARAMS
        .iter()
        .map(|n| params.str(n).as_bytes().to_vec())
        .collect();
    for name in ["transport_maps", "address_verify_transport_maps"] {
        for spec in params.list(name).unwrap_or_default() {
            texts.push(spec.as_bytes().to_vec());
            if let Ok(t) = parse(&spec) {
                for (p, _) in t.files() {
                    if let Ok(d) = std::fs::read(&p) {
                        texts.push(d);
                    }
                }
            }
        }
    }
    marked_paths(&texts, b"lmtp:unix:")
}

/// The table files a role may have the master open for it.
pub fn allowed_files(role: crate::Role, params: &crate::Params) -> Vec<PathBuf> {
    use crate::Role;
    let mut v = match role {
        Role::Broker => configured_files(params),
        Role::Qmgr | Role::Local => files_of(
            params,
            TABLE_PARAMS
                .iter()
                .chain(REWRITE_PARAMS)
                .chain(ROUTING_PARAMS)
                .filter(|p| !SECRET_PARAMS.contains(p) && !SMTPD_ONLY_PARAMS.contains(p)),
        ),
        // pickup: who may submit and as whom, and the smtpd restrictions.
        Role::Pickup => files_of(
            params,
            [
                "authorized_submit_users",
                "local_login_sender_maps",
                "smtpd_sender_login_maps",
                "postern_access_maps",
                "virtual_alias_domains",
                "virtual_mailbox_domains",
            ]
            .iter(),
        ),
        Role::Cleanup => files_of(params, CONTENT_PARAMS.iter().chain(REWRITE_PARAMS)),
        // postscreen: the cidr (or other) tables of its access list.
        Role::Postscreen => files_of(params, ["postscreen_access_list"].iter()),
        // smtp: the Unix sockets of LMTP servers, which the master
        // connects to for it.
        Role::Smtp => {
            let mut v = lmtp_sockets(params);
            v.extend(tafile_paths(params));
            v
        }
        // proxymap: the sockets of socketmap:unix: tables, which the
        // master connects to for it (it has no Unix sockets of its own).
        Role::Proxymap => remote_tables(params)
            .into_values()
            .filter_map(|t| match t {
                Table::Socketmap(Endpoint::Unix(p), _) => Some(p),
                _ => None,
            })
            .collect(),
        // milter: the sockets of unix: Milters, which the master connects
        // to for it.
        Role::Milter => crate::milter::configured(params)
            .into_iter()
            .filter_map(|m| match m.endpoint {
                Endpoint::Unix(p) => Some(p),
                Endpoint::Inet(_) => None,
            })
            .collect(),
        // policy: the sockets of unix: policy services, which the master
        // connects to for it.
        Role::Policy => crate::policy::configured(params)
            .into_values()
            .filter_map(|s| match s.endpoint {
                Endpoint::Unix(p) => Some(p),
                Endpoint::Inet(_) => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if matches!(role, Role::Local | Role::Pickup) {
        // local checks that users exist whatever local_recipient_maps says;
        // pickup turns uids into login names.
        v.push(PathBuf::from("/etc/passwd"));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert!(matches!(
            parse("proxy:unix:passwd.byname").unwrap(),
            Table::Passwd
        ));
        assert!(parse("cdb:relative/path").is_err());
        assert!(
            parse("nis:x")
                .unwrap_err()
                .contains("not supported by Postern")
        );
        assert!(
            parse("ldap:/etc/postfix/ldap.cf")
                .unwrap_err()
                .contains("not supported")
        );
        assert!(parse("frob:/x").unwrap_err().contains("unknown table type"));
        let t = parse("inline:{ Postmaster=root, { abuse = root, admin } }").unwrap();
        assert_eq!(t.lookup("POSTMASTER").unwrap().as_deref(), Some("root"));
        assert_eq!(t.lookup("abuse").unwrap().as_deref(), Some("root, admin"));
        assert!(parse("inline:{ a= }").is_err());
        assert!(parse("inline:{ a = b }").is_err());
        let s = parse("static:{ 550 go away }").unwrap();
        assert_eq!(s.lookup("x").unwrap().as_deref(), Some("550 go away"));
    }

    #[test]
    fn inline_pattern_tables_union_and_pipe() {
        let c = parse("cidr:{ {192.0.2.0/24 OK}, {0.0.0.0/0 REJECT} }").unwrap();
        assert_eq!(c.lookup("192.0.2.9").unwrap().as_deref(), Some("OK"));
        assert_eq!(c.lookup("198.51.100.1").unwrap().as_deref(), Some("REJECT"));
        let r = parse("regexp:{ {/^(.*)@example\\.com$/ $1}, {/./ other} }").unwrap();
        assert_eq!(r.lookup("Bob@Example.COM").unwrap().as_deref(), Some("Bob"));
        let e = parse("pcre:{ {/(?=x)/ y} }").unwrap_err();
        assert!(e.contains("pcre:{...}:1:"), "{e}");
        let u = parse("unionmap:{ inline:{a=1}, inline:{a=2, b=3}, static:s }").unwrap();
        assert_eq!(u.lookup("a").unwrap().as_deref(), Some("1,2,s"));
        let p = parse("pipemap:{ inline:{a=b}, inline:{b=c} }").unwrap();
        assert_eq!(p.lookup("a").unwrap().as_deref(), Some("c"));
        assert_eq!(p.lookup("b").unwrap(), None);
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
    fn texthash_passwd_and_missing_files() {
        let m = source::texthash("# c\nroot admin\npostmaster: root,\n  other\n", "f").unwrap();
        assert_eq!(m.get("postmaster").map(String::as_str), Some("root, other"));
        assert_eq!(m.get("nobody"), None);
        // Keys with a colon inside (smtp_sasl_password_maps), and the
        // aliases form without a space.
        let m = source::texthash("[mx.example]:587 user:pass word\nroot:admin\n", "f").unwrap();
        assert_eq!(
            m.get("[mx.example]:587").map(String::as_str),
            Some("user:pass word")
        );
        assert_eq!(m.get("root").map(String::as_str), Some("admin"));
        assert!(
            source::texthash("key\n", "f").unwrap_err()[0].starts_with("f:1: key: empty value")
        );
        assert!(source::passwd_lookup("root:x:0:0::/root:/bin/sh\n", "root").is_some());
        // A table file that does not exist is a lookup error, not an empty
        // table (Postfix refuses the same way).
        let e = Table::Cdb("/nonexistent/aliases".into())
            .lookup("x")
            .unwrap_err();
        assert_eq!(
            e,
            "open /nonexistent/aliases.cdb: No such file or directory"
        );
    }
}
