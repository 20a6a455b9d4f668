//! Reading files that several processes share descriptors of.

/// Reads a whole file with positional reads (pread) until end of file.
/// Queue files reach qmgr, the delivery agents and `postern queue show` as
/// dups of one open file description, so nobody may move the shared file
/// offset; and no stat is needed (a jailed role may not stat).
pub fn read_whole(f: &impl std::os::fd::AsFd) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::from(f.as_fd().try_clone_to_owned()?);
    let mut buf = vec![0u8; 64 * 1024];
    let mut done = 0;
    loop {
        if done == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match file.read_at(&mut buf[done..], done as u64)? {
            0 => break,
            n => done += n,
        }
    }
    buf.truncate(done);
    Ok(buf)
}

/// Replaces `path` with `data` atomically and durably: a temporary file
/// beside it (mode 0600, or 0640 with `owner` set as its uid and gid),
/// fsynced, renamed into place, and the directory fsynced.
pub fn write_atomically(
    path: &std::path::Path,
    data: &[u8],
    owner: Option<(u32, u32)>,
) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = path
        .parent()
        .ok_or_else(|| format!("{}: no directory", path.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let r = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
            f.set_permissions(std::fs::Permissions::from_mode(0o640))?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    r.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}
