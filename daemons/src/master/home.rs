//! Users' `.forward` files, opened by the master for local.
//!
//! local has its own uid and no capabilities, so it cannot read a file in
//! a user's home. It asks the master, which opens it only when it is named
//! `.forward` or `.forward<anything>` directly in the home directory of a
//! user of /etc/passwd other than root, is not a symbolic link, is a
//! regular file owned by that user or by root, and is writable by nobody
//! else (Postfix's rule). A file that fails those checks is an error, so
//! the delivery waits (logged) rather than following or skipping a
//! .forward the user may not have written.
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A user's uid and home directory, from /etc/passwd.
struct User {
    uid: u32,
    home: String,
}

fn users() -> Vec<User> {
    let text = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 7).then(|| User {
                uid: f[2].parse().unwrap_or(0),
                home: f[5].to_string(),
            })
        })
        .collect()
}

/// None when `path` is not a .forward file local may ask for (the caller
/// treats that as a protocol violation); otherwise the open file, None
/// when there is none, or why it is not used.
pub fn forward_file(path: &Path) -> Option<Result<Option<OwnedFd>, String>> {
    let name = path.file_name()?.to_str()?;
    if !name.starts_with(".forward") {
        return None;
    }
    let dir = path.parent()?;
    let user = users()
        .into_iter()
        .find(|u| u.uid != 0 && !u.home.is_empty() && Path::new(&u.home) == dir)?;
    Some(open_checked(path, user.uid))
}

fn open_checked(path: &Path, uid: u32) -> Result<Option<OwnedFd>, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags = (nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK).bits();
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Err(format!("{}: a symbolic link; not used", path.display()));
        }
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let m = f
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if !m.is_file() {
        return Err(format!("{}: not a regular file", path.display()));
    }
    if m.uid() != uid && m.uid() != 0 {
        return Err(format!(
            "{}: owned by uid {}, not by the user or root; not used",
            path.display(),
            m.uid()
        ));
    }
    if m.mode() & 0o022 != 0 {
        return Err(format!(
            "{}: writable by group or others; not used",
            path.display()
        ));
    }
    Ok(Some(OwnedFd::from(f)))
}
