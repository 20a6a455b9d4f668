//! Table files for jailed daemons: descriptors the master opened, each
//! parsed once and kept until the file changes.
//!
//! - A table replaced by rename (`postern map build`, an editor's save) is
//!   noticed because the old inode has no links left: the file is asked
//!   for again. A file edited in place is noticed by its size and times,
//!   and read again from the same descriptor.
//! - A read during which the file changed is read again, so a lookup sees
//!   the old content or the new, never a mix (L420).
//! - A file that is missing or does not parse is a lookup error, never an
//!   empty table. The error is kept for a few seconds, then the master is
//!   asked again, so a table that comes back is used without a restart.
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::daemon;
use crate::tables::{self, Format, Loaded, Table};

/// How long a failure (missing file, parse error) is answered from memory
/// before the file is asked for again.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// What identifies one version of a file's content (fstat by its own
/// system call: the seccomp profile of qmgr and local allows no other).
type Version = postern_sandbox::sys::FileVersion;

fn version(f: &std::fs::File) -> std::io::Result<Version> {
    use std::os::fd::AsFd;
    postern_sandbox::sys::fstat(f.as_fd())
}

struct Entry {
    file: Option<std::fs::File>,
    version: Option<Version>,
    loaded: Result<Arc<Loaded>, String>,
    at: Instant,
}

/// A table a setting names, or why the reference is unusable. A bad
/// reference is a lookup error wherever it is used, never a fatal error at
/// start: the daemon keeps serving everything that does not need it
/// (`postern conf --check` and `postern start` refuse such a reference
/// before it gets here).
pub type TableRef = Result<Table, String>;

/// The tables a list parameter names.
pub fn table_list(p: &postern_config::Params, name: &str) -> Vec<TableRef> {
    match p.list(name) {
        Ok(items) => items
            .iter()
            .map(|s| tables::parse(s).map_err(|e| format!("{name}: {e}")))
            .collect(),
        Err(e) => vec![Err(e.to_string())],
    }
}

pub struct TableCache {
    sb: daemon::Switchboard,
    files: RefCell<HashMap<(PathBuf, Format), Entry>>,
    /// tcp: and socketmap: tables, through proxymap.
    remote: crate::proxymap::Client,
}

/// Reads and parses `f`, again if it changed during the read.
fn read_stable(
    f: &std::fs::File,
    path: &Path,
    format: Format,
) -> (Option<Version>, Result<Arc<Loaded>, String>) {
    let name = path.display().to_string();
    for _ in 0..3 {
        let before = match version(f) {
            Ok(v) => v,
            Err(e) => return (None, Err(format!("{name}: {}", tables::io_text(&e)))),
        };
        let data = match crate::fsutil::read_whole(f, crate::fsutil::TABLE_FILE_CAP) {
            Ok(d) => d,
            Err(e) => {
                return (
                    Some(before),
                    Err(format!("{name}: {}", tables::io_text(&e))),
                );
            }
        };
        if version(f).ok() != Some(before) {
            continue;
        }
        let loaded = tables::load(format, data, &name)
            .map(Arc::new)
            .map_err(|e| e.join("; "));
        return (Some(before), loaded);
    }
    (
        None,
        Err(format!("{name}: the file keeps changing while it is read")),
    )
}

impl TableCache {
    pub fn new(sb: daemon::Switchboard) -> Self {
        Self {
            remote: crate::proxymap::Client::new(sb.clone()),
            sb,
            files: RefCell::default(),
        }
    }

    /// The parsed contents of `path`, or why there are none.
    pub async fn get(&self, path: &Path, format: Format) -> Result<Arc<Loaded>, String> {
        let key = (path.to_path_buf(), format);
        {
            let mut files = self.files.borrow_mut();
            if let Some(e) = files.get_mut(&key) {
                let now = e.file.as_ref().and_then(|f| version(f).ok());
                match (&e.file, now) {
                    // Still the linked file: reuse, or re-read if edited.
                    (Some(f), Some(v)) if v.nlink > 0 => {
                        if Some(v) != e.version {
                            let (v, l) = read_stable(f, path, format);
                            e.version = v;
                            e.loaded = l;
                            e.at = Instant::now();
                        }
                        return e.loaded.clone();
                    }
                    (None, _) if e.at.elapsed() < RETRY_AFTER => return e.loaded.clone(),
                    _ => {}
                }
            }
        }
        let opened = self.sb.open_table(path).await;
        let (file, version, loaded) = match opened {
            Ok(Some(fd)) => {
                let f = std::fs::File::from(fd);
                let (v, l) = read_stable(&f, path, format);
                (Some(f), v, l)
            }
            Ok(None) => (
                None,
                None,
                Err(format!(
                    "open {}: No such file or directory",
                    path.display()
                )),
            ),
            Err(e) => (None, None, Err(format!("open {}: {e}", path.display()))),
        };
        let r = loaded.clone();
        self.files.borrow_mut().insert(
            key,
            Entry {
                file,
                version,
                loaded,
                at: Instant::now(),
            },
        );
        r
    }

    /// Looks `key` up in `table`, reading its files through the cache and
    /// asking proxymap for external tables. A file that cannot be read or
    /// parsed, or an external table that does not answer, makes this a
    /// lookup error.
    pub async fn lookup(&self, table: &Table, key: &str) -> Result<Option<String>, String> {
        if table.remotes().is_empty() {
            self.lookup_local(table, key).await
        } else {
            self.lookup_remote(table, key).await
        }
    }

    /// A table with external tables in it: unionmap and pipemap are walked
    /// here (each step may need the network), the rest as usual.
    fn lookup_remote<'a>(
        &'a self,
        table: &'a Table,
        key: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Option<String>, String>> + 'a>>
    {
        Box::pin(async move {
            match table {
                Table::Tcp(_) | Table::Socketmap(..) => self.remote.lookup(table, key).await,
                Table::Union(v) => {
                    let mut hits = Vec::new();
                    for t in v {
                        if let Some(r) = self.lookup(t, key).await? {
                            hits.push(r);
                        }
                    }
                    Ok((!hits.is_empty()).then(|| hits.join(",")))
                }
                Table::Pipe(v) => {
                    let mut k = key.to_string();
                    for t in v {
                        match self.lookup(t, &k).await? {
                            Some(r) => k = r,
                            None => return Ok(None),
                        }
                    }
                    Ok(Some(k))
                }
                other => self.lookup_local(other, key).await,
            }
        })
    }

    async fn lookup_local(&self, table: &Table, key: &str) -> Result<Option<String>, String> {
        let mut got: HashMap<(PathBuf, Format), Result<Arc<Loaded>, String>> = HashMap::new();
        for (p, f) in table.files() {
            if !got.contains_key(&(p.clone(), f)) {
                let r = self.get(&p, f).await;
                got.insert((p, f), r);
            }
        }
        table.lookup_with(key, &mut |p, f| {
            got.get(&(p.to_path_buf(), f))
                .cloned()
                .unwrap_or_else(|| Err(format!("{}: not loaded", p.display())))
        })
    }

    /// The first hit over a list of tables (Postfix's "table1, table2").
    /// An access lookup (access(5)): the full key (`keys[0]`) in every
    /// table, the partial keys only in tables that take them; the first
    /// key found wins, with its index.
    pub async fn access(
        &self,
        table: &TableRef,
        keys: &[String],
    ) -> Result<Option<(usize, String)>, String> {
        let t = table.as_ref().map_err(Clone::clone)?;
        for (i, k) in keys.iter().enumerate() {
            if i > 0 && !t.fixed() {
                break;
            }
            if let Some(v) = self.lookup(t, k).await? {
                return Ok(Some((i, v)));
            }
        }
        Ok(None)
    }

    pub async fn lookup_any(
        &self,
        tables: &[TableRef],
        key: &str,
    ) -> Result<Option<String>, String> {
        for t in tables {
            let t = t.as_ref().map_err(Clone::clone)?;
            if let Some(v) = self.lookup(t, key).await? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }
}
