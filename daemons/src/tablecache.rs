//! Table files for jailed daemons: descriptors the master opened, re-opened
//! when a table was replaced by rename (the old inode has no links left),
//! and asked for again a few seconds after a table was found missing.
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::daemon;
use crate::tables::Table;

pub struct TableCache {
    sb: daemon::Switchboard,
    files: RefCell<HashMap<PathBuf, (Option<std::fs::File>, std::time::Instant)>>,
}

impl TableCache {
    pub fn new(sb: daemon::Switchboard) -> Self {
        Self {
            sb,
            files: RefCell::default(),
        }
    }

    pub async fn read(&self, path: &Path) -> Result<Option<Vec<u8>>, String> {
        use std::os::unix::fs::MetadataExt;
        let cached = {
            let files = self.files.borrow();
            match files.get(path) {
                Some((Some(f), _)) if f.metadata().is_ok_and(|m| m.nlink() > 0) => {
                    Some(Some(f.try_clone().map_err(|e| e.to_string())?))
                }
                Some((None, at)) if at.elapsed() < Duration::from_secs(5) => Some(None),
                _ => None,
            }
        };
        let file = match cached {
            Some(f) => f,
            None => {
                let f = self.sb.open_table(path).await?.map(std::fs::File::from);
                let keep = f
                    .as_ref()
                    .map(|f| f.try_clone())
                    .transpose()
                    .map_err(|e| e.to_string())?;
                self.files
                    .borrow_mut()
                    .insert(path.to_path_buf(), (keep, std::time::Instant::now()));
                f
            }
        };
        match file {
            Some(f) => crate::fsutil::read_whole(&f, crate::fsutil::TABLE_FILE_CAP)
                .map(Some)
                .map_err(|e| format!("{}: {e}", path.display())),
            None => Ok(None),
        }
    }

    /// Looks `key` up in `table`, reading its file through the cache.
    pub async fn lookup(&self, table: &Table, key: &str) -> Result<Option<String>, String> {
        let data = match table.file() {
            Some(f) => self.read(&f).await?,
            None => None,
        };
        table.lookup_in(key, data.as_deref())
    }

    /// The first hit over a list of tables (Postfix's "table1, table2").
    pub async fn lookup_any(&self, tables: &[Table], key: &str) -> Result<Option<String>, String> {
        for t in tables {
            if let Some(v) = self.lookup(t, key).await? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }
}
