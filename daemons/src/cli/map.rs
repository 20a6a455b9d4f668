//! `postern map build|query`, after postmap(1) and postalias(1), and
//! `newaliases`. Tables are rebuilt atomically: the new file is written
//! beside the old one, synced, and renamed over it, so a reader sees either
//! the old table or the new one, never half of one (L420).
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::tables::{self, Table, cdb, parse_source};

/// Builds `PATH.cdb` from `PATH`, replacing the old table atomically.
pub fn build(spec: &str, aliases: bool) -> Result<usize, Vec<String>> {
    let path = match tables::parse(spec) {
        Ok(Table::Cdb(p)) => p,
        Ok(_) => {
            return Err(vec![format!(
                "{spec}: only cdb: (or hash:) tables are built"
            )]);
        }
        Err(e) => return Err(vec![e]),
    };
    let file = path.display().to_string();
    let text = crate::fsutil::read_path_string(&path, crate::fsutil::TABLE_FILE_CAP)
        .map_err(|e| vec![format!("{file}: {e}")])?;
    let pairs = parse_source(&text, &file, aliases)?;
    let n = pairs.len();
    let image = cdb::build(
        &pairs
            .into_iter()
            .map(|(k, v)| (k.into_bytes(), v.into_bytes()))
            .collect::<Vec<_>>(),
    );
    write_atomically(&with_suffix(&path, ".cdb"), &image).map_err(|e| vec![e])?;
    Ok(n)
}

/// Makes sure every `alias_database` table exists before the first start,
/// as Debian's postfix package does with newaliases: a missing source gets
/// `postmaster: root`, and a missing `.cdb` is built from its source.
pub fn ensure_aliases(params: &postern_config::Params) -> Result<(), Vec<String>> {
    ensure(params, false)
}

/// [`ensure_aliases`] for tables whose directory exists already (the
/// command line does this before the master starts, so that a broken
/// aliases source is reported on the terminal).
pub fn ensure_aliases_where_possible(params: &postern_config::Params) -> Result<(), Vec<String>> {
    ensure(params, true)
}

fn ensure(params: &postern_config::Params, existing_dirs_only: bool) -> Result<(), Vec<String>> {
    for spec in params.list("alias_database").unwrap_or_default() {
        let Ok(Table::Cdb(src)) = tables::parse(&spec) else {
            continue;
        };
        if existing_dirs_only && !src.parent().is_some_and(Path::exists) {
            continue;
        }
        if with_suffix(&src, ".cdb").exists() {
            continue;
        }
        if !src.exists() {
            if let Err(e) = std::fs::write(
                &src,
                "# Created by postern start: mail to postmaster goes to root.\npostmaster: root\n",
            ) {
                // Not fatal: lookups in the missing table fail (451, or a
                // deferred delivery) until an admin builds it.
                eprintln!(
                    "postern: warning: cannot create {}: {e}; aliases are unavailable until `postern newaliases` builds them",
                    src.display()
                );
                continue;
            }
            eprintln!("postern: created {} (postmaster: root)", src.display());
        }
        let n = build(&spec, true)?;
        eprintln!("postern: built {}.cdb ({n} aliases)", src.display());
    }
    Ok(())
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn write_atomically(dest: &Path, data: &[u8]) -> Result<(), String> {
    let tmp = with_suffix(dest, &format!(".tmp.{}", std::process::id()));
    let err = |e: std::io::Error| format!("{}: {e}", dest.display());
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(err)?;
    std::fs::rename(&tmp, dest).map_err(err)?;
    if let Some(dir) = dest.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
    }
    Ok(())
}

pub fn run_build(specs: &[String], aliases: bool) -> ExitCode {
    let mut ok = true;
    for s in specs {
        match build(s, aliases) {
            Ok(_) => {}
            Err(errs) => {
                ok = false;
                for e in errs {
                    eprintln!("postern: error: {e}");
                }
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `postern map query TYPE:PATH KEY...`: prints the values; exit 1 when a
/// key is not found, 2 on errors (as postmap -q). With the one key `-`,
/// keys are read from stdin, one per line, and each key found is printed
/// as `key<TAB>value` (as `postmap -q -`).
///
/// A table the running system uses is asked through it (the broker's
/// table cache, proxymap for external tables: what the daemons see).
/// Otherwise, or with no system running, the command reads the table
/// itself and says so on stderr.
pub fn run_query(dir: Option<&Path>, spec: &str, keys: &[String], json: bool) -> ExitCode {
    let t = match tables::parse(spec) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("postern: fatal: {e}");
            return ExitCode::from(2);
        }
    };
    let mut system = through_system(dir, spec, &t);
    if !json && keys.len() == 1 && keys[0] == "-" {
        return query_stdin(&mut |k| one(&mut system, &t, spec, k));
    }
    // --json on a unionmap also names the member tables that answered.
    let members = tables::union_members(spec).filter(|_| json);
    let mut status = ExitCode::SUCCESS;
    for k in keys {
        let answer = match &members {
            Some(members) => union_answer(members, k, &mut system),
            None => one(&mut system, &t, spec, k).map(|v| (v, Vec::new())),
        };
        match answer {
            Ok((Some(v), from)) if json && members.is_some() => println!(
                "{}",
                serde_json::json!({ "table": spec, "key": k, "value": v, "from": from })
            ),
            Ok((Some(v), _)) if json => println!(
                "{}",
                serde_json::json!({ "table": spec, "key": k, "value": v })
            ),
            Ok((Some(v), _)) => println!("{v}"),
            Ok((None, _)) => {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({ "table": spec, "key": k, "value": null })
                    );
                }
                status = ExitCode::from(1);
            }
            Err(e) => {
                eprintln!("postern: fatal: {e}");
                return ExitCode::from(2);
            }
        }
    }
    status
}

/// One lookup, through the running system when there is one.
fn one(
    system: &mut Option<System>,
    t: &Table,
    spec: &str,
    key: &str,
) -> Result<Option<String>, String> {
    match system.as_mut() {
        Some(s) => s.lookup(spec, key),
        None => direct(t, key),
    }
}

/// A unionmap's answer looked up member by member: the comma-joined
/// results (as the unionmap gives them) and the members that answered.
fn union_answer(
    members: &[String],
    key: &str,
    system: &mut Option<System>,
) -> Result<(Option<String>, Vec<String>), String> {
    let mut hits = Vec::new();
    let mut from = Vec::new();
    for m in members {
        let r = match system.as_mut() {
            Some(s) => s.lookup(m, key)?,
            None => direct(&tables::parse(m)?, key)?,
        };
        if let Some(v) = r {
            hits.push(v);
            from.push(m.clone());
        }
    }
    Ok(((!hits.is_empty()).then(|| hits.join(",")), from))
}

/// A channel to the running system's broker, for tables it uses.
struct System {
    rt: tokio::runtime::Runtime,
    ep: postern_ipc::Endpoint<postern_ipc::proxymap::Request, postern_ipc::proxymap::Reply>,
}

impl System {
    fn lookup(&mut self, spec: &str, key: &str) -> Result<Option<String>, String> {
        use postern_ipc::proxymap::{Reply, Request};
        let req = Request {
            table: spec.to_string(),
            key: key.to_string(),
        };
        match self.rt.block_on(self.ep.call(&req)) {
            Ok(Reply::Found(v)) => Ok(Some(v)),
            Ok(Reply::NotFound) => Ok(None),
            Ok(Reply::Failed(e)) => Err(e),
            Err(e) => Err(format!("the running system: {e}")),
        }
    }
}

/// The running system, when it uses `t` (its files are configured tables,
/// its external tables configured ones); None after saying why on stderr.
fn through_system(dir: Option<&Path>, spec: &str, t: &Table) -> Option<System> {
    use postern_ipc::control::{Reply as CtlReply, Request as CtlRequest};
    use postern_ipc::proxymap as px;
    if t.files().is_empty() && t.remotes().is_empty() {
        // inline: and static: answer the same everywhere.
        return None;
    }
    let params = postern_config::Config::load(dir).params_lenient();
    let files = tables::configured_files(&params);
    let remotes = crate::proxymap::remote_tables(&params);
    let used = t.files().iter().all(|(p, _)| files.contains(p))
        && t.remotes()
            .iter()
            .all(|r| r.spec().is_some_and(|s| remotes.contains_key(&s)));
    if !used {
        eprintln!(
            "postern: {spec} is named by no setting of this configuration: reading it directly"
        );
        return None;
    }
    let socket = crate::master::dirs::Layout::new(&params).control;
    let fd = match super::client::request(&socket, CtlRequest::Tables) {
        Ok(CtlReply::Channel(fd)) => fd,
        Ok(CtlReply::Error(e)) => {
            eprintln!(
                "postern: the running system cannot answer for {spec} ({e}): reading it directly"
            );
            return None;
        }
        _ => {
            eprintln!("postern: no running system answers for {spec}: reading it directly");
            return None;
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let timeout = std::time::Duration::from_secs(30);
    let ep = rt.block_on(async {
        let mut ch =
            postern_ipc::Channel::new(fd, <px::Reply as postern_ipc::Message>::MAX_FRAME, timeout)
                .map_err(|e| e.to_string())?;
        ch.hello_client(px::EDGE, px::VERSION)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(postern_ipc::Endpoint::from_channel(ch))
    });
    match ep {
        Ok(ep) => Some(System { rt, ep }),
        Err(e) => {
            eprintln!(
                "postern: the running system cannot answer for {spec} ({e}): reading it directly"
            );
            None
        }
    }
}

/// A lookup by the command itself: files read directly, external tables
/// asked over a connection of its own (the same bounded parsers as
/// proxymap, a 10-second deadline).
fn direct(t: &Table, key: &str) -> Result<Option<String>, String> {
    t.lookup_full(
        key,
        &mut |p, f| tables::read_and_load(p, f).map(std::sync::Arc::new),
        &mut |t, k| remote_blocking(t, k),
    )
}

fn remote_blocking(t: &Table, key: &str) -> Result<Option<String>, String> {
    use postern_proto::tablemap::{Answer, Progress};
    use std::io::Read;
    let deadline = std::time::Duration::from_secs(10);
    let (request, parse) = crate::proxymap::plan(t, key)?;
    let (mut s, addr): (Box<dyn ReadWrite>, String) = match t {
        Table::Tcp(tables::Endpoint::Inet(a)) | Table::Socketmap(tables::Endpoint::Inet(a), _) => {
            let s = std::net::TcpStream::connect_timeout(a, deadline)
                .map_err(|e| format!("connect to {a}: {e}"))?;
            s.set_read_timeout(Some(deadline))
                .and_then(|()| s.set_write_timeout(Some(deadline)))
                .map_err(|e| format!("{a}: {e}"))?;
            (Box::new(s), a.to_string())
        }
        Table::Socketmap(tables::Endpoint::Unix(p), _) => {
            let s = std::os::unix::net::UnixStream::connect(p)
                .map_err(|e| format!("connect to {}: {e}", p.display()))?;
            s.set_read_timeout(Some(deadline))
                .and_then(|()| s.set_write_timeout(Some(deadline)))
                .map_err(|e| format!("{}: {e}", p.display()))?;
            (Box::new(s), p.display().to_string())
        }
        _ => return Err("not an external table".into()),
    };
    s.write_all(&request).map_err(|e| format!("{addr}: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Progress::Done(a, _) = parse(&buf).map_err(|e| format!("reply from {addr}: {e}"))? {
            return match a {
                Answer::Found(v) => Ok(Some(v)),
                Answer::NotFound => Ok(None),
                Answer::Failed(why) => Err(format!("{addr} says: {why}")),
            };
        }
        let n = s
            .read(&mut chunk)
            .map_err(|e| format!("read from {addr}: {e}"))?;
        if n == 0 {
            return Err(format!(
                "reply from {addr}: connection closed before the reply ended"
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

trait ReadWrite: std::io::Read + std::io::Write {}
impl<T: std::io::Read + std::io::Write> ReadWrite for T {}

fn query_stdin(lookup: &mut dyn FnMut(&str) -> Result<Option<String>, String>) -> ExitCode {
    use std::io::BufRead;
    let stdin = std::io::stdin();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for line in stdin.lock().lines() {
        let key = match line {
            Ok(k) => k,
            Err(e) => {
                eprintln!("postern: fatal: reading keys: {e}");
                return ExitCode::from(2);
            }
        };
        if key.is_empty() {
            continue;
        }
        match lookup(&key) {
            Ok(Some(v)) => {
                if writeln!(out, "{key}\t{v}").is_err() {
                    return ExitCode::from(2);
                }
            }
            Ok(None) => {}
            Err(e) => {
                eprintln!("postern: fatal: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if out.flush().is_err() {
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_source_and_errors() {
        let ok = parse_source(
            "# c\npostmaster: root\nabuse: root,\n  admin\n",
            "aliases",
            true,
        )
        .unwrap();
        assert_eq!(
            ok,
            vec![
                ("postmaster".into(), "root".into()),
                ("abuse".into(), "root, admin".into())
            ]
        );
        let errs = parse_source("a: b\nbroken line\nc:\n", "aliases", true).unwrap_err();
        assert_eq!(
            errs,
            vec![
                "aliases:2: missing ':' after alias name",
                "aliases:3: c: empty value"
            ]
        );
        let errs = parse_source("key\n", "map", false).unwrap_err();
        assert_eq!(errs, vec!["map:1: key: empty value"]);
    }
}
