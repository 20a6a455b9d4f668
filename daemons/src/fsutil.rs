//! Reading files that several processes share descriptors of.

/// How much of a queue file anyone reads: the largest message plus room
/// for its envelope and a long history of delivery records. Set once per
/// process from main.cf (`init_caps`); 1 GiB with no message size limit.
static QUEUE_FILE_CAP: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
const QUEUE_FILE_HEADROOM: u64 = 64 << 20;
const QUEUE_FILE_CAP_UNLIMITED: u64 = 1 << 30;
/// The largest lookup table a role reads into memory.
pub const TABLE_FILE_CAP: u64 = 512 << 20;

/// Sets this process's caps from its parameters.
pub fn init_caps(p: &postern_config::Params) {
    let limit = p.size("message_size_limit").unwrap_or(0);
    let cap = if limit == 0 {
        QUEUE_FILE_CAP_UNLIMITED
    } else {
        limit.saturating_add(QUEUE_FILE_HEADROOM)
    };
    let _ = QUEUE_FILE_CAP.set(cap);
}

pub fn queue_file_cap() -> u64 {
    QUEUE_FILE_CAP
        .get()
        .copied()
        .unwrap_or(10_240_000 + QUEUE_FILE_HEADROOM)
}

/// Reads a whole queue file (see [`read_whole`]) up to the queue-file cap.
pub fn read_queue_file(f: &impl std::os::fd::AsFd) -> std::io::Result<Vec<u8>> {
    read_whole(f, queue_file_cap())
}

/// Reads a whole file through a descriptor without moving its offset.
/// Queue files reach qmgr, the delivery agents and `postern queue show` as
/// dups of one open file description, so nobody may move the shared file
/// offset; and no stat is needed (a jailed role may not stat). A file
/// longer than `cap` bytes is an error of kind `FileTooLarge`: a file that
/// another process wrote never makes this one allocate without bound.
pub fn read_whole(f: &impl std::os::fd::AsFd, cap: u64) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::from(f.as_fd().try_clone_to_owned()?);
    let max = usize::try_from(cap.saturating_add(1)).unwrap_or(usize::MAX);
    let mut buf = vec![0u8; (64 * 1024).min(max)];
    let mut done = 0;
    loop {
        if done == buf.len() {
            if buf.len() >= max {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::FileTooLarge,
                    format!("file is larger than {cap} bytes"),
                ));
            }
            buf.resize(buf.len().saturating_mul(2).min(max), 0);
        }
        match file.read_at(&mut buf[done..], done as u64)? {
            0 => break,
            n => done += n,
        }
    }
    buf.truncate(done);
    Ok(buf)
}

/// Small files named by path (keys, certificates, password files, pid
/// files, resolv.conf): at most this many bytes.
pub const SMALL_FILE_CAP: u64 = 16 << 20;

/// Reads the file at `path`, refusing one over `cap` bytes.
pub fn read_path(path: impl AsRef<std::path::Path>, cap: u64) -> std::io::Result<Vec<u8>> {
    read_whole(&std::fs::File::open(path)?, cap)
}

/// [`read_path`] as UTF-8 text.
pub fn read_path_string(path: impl AsRef<std::path::Path>, cap: u64) -> std::io::Result<String> {
    String::from_utf8(read_path(path, cap)?)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
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

#[cfg(test)]
mod tests {
    #[test]
    fn whole_files_are_read_up_to_their_cap_and_no_further() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![7u8; 200_000]).unwrap();
        let f = std::fs::File::open(&p).unwrap();
        assert_eq!(super::read_whole(&f, 200_000).unwrap().len(), 200_000);
        let e = super::read_whole(&f, 199_999).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::FileTooLarge);
        assert_eq!(
            super::read_whole(&f, 0).unwrap_err().kind(),
            std::io::ErrorKind::FileTooLarge
        );
        std::fs::write(&p, b"").unwrap();
        assert!(super::read_whole(&f, 0).unwrap().is_empty());
        assert_eq!(
            super::read_path(&p, 10).unwrap(),
            Vec::<u8>::new(),
            "an empty file is within any cap"
        );
    }
}
