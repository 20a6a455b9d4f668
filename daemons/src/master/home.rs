//! Files in users' homes, for local: `.forward` files, and Maildir files
//! for home_mailbox.
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

/// A user's name, uid, gid and home directory, from /etc/passwd.
struct User {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

fn users() -> Vec<User> {
    let text = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 7).then(|| User {
                name: f[0].to_string(),
                uid: f[2].parse().unwrap_or(0),
                gid: f[3].parse().unwrap_or(0),
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

/// home_mailbox delivery (Maildir in the user's home). local asks for
/// the path of the file in the user's Maildir:
///
/// - `HOME/MAILDIR/tmp/NAME`: the master creates the file (making the
///   Maildir and its tmp, new and cur, mode 0700, when missing), owned by
///   the user, mode 0600, and passes it open for writing;
/// - `HOME/MAILDIR/new/NAME`: the master renames `tmp/NAME` there and
///   syncs the directory (the file is delivered).
///
/// MAILDIR is the configuration's home_mailbox, HOME the home of a passwd
/// user other than root, which that user owns; every directory is opened
/// without following a symbolic link. NAME is local's unique name, of
/// letters, digits, `.`, `_` and `-`. None when the path is no such
/// request (a protocol violation for the caller).
pub fn maildir_request(path: &Path, home_mailbox: &str) -> Option<Result<Option<OwnedFd>, String>> {
    if home_mailbox.is_empty() {
        return None;
    }
    let name = path.file_name()?.to_str()?;
    let sub = path.parent()?;
    let op = match sub.file_name()?.to_str()? {
        "tmp" => "create",
        "new" => "commit",
        _ => return None,
    };
    let name_ok = name.len() <= 200
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_".contains(&b));
    if !name_ok {
        return None;
    }
    let maildir = sub.parent()?;
    let u = users().into_iter().find(|u| {
        u.uid != 0 && !u.home.is_empty() && Path::new(&u.home).join(home_mailbox) == maildir
    })?;
    Some(maildir_op(op, &u, name, home_mailbox))
}

fn maildir_op(
    op: &str,
    u: &User,
    name: &str,
    home_mailbox: &str,
) -> Result<Option<OwnedFd>, String> {
    use nix::fcntl::{AtFlags, OFlag, open, openat, renameat};
    use nix::sys::stat::{Mode, fstat, mkdirat};
    use nix::unistd::{Gid, Uid, fchown, fchownat};
    let err = |what: &str, e: nix::Error| format!("{}: {what}: {e}", u.home);
    let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let (uid, gid) = (Uid::from_raw(u.uid), Gid::from_raw(u.gid));
    let home = open(u.home.as_str(), dir_flags, Mode::empty()).map_err(|e| err("open", e))?;
    let st = fstat(&home).map_err(|e| err("fstat", e))?;
    if st.st_uid != u.uid {
        return Err(format!("{}: not owned by {}; not used", u.home, u.name));
    }
    // Each directory below the home: opened without following a link,
    // made (owned by the user) when missing.
    let step = |at: &OwnedFd, comp: &str| -> Result<OwnedFd, String> {
        match openat(at, comp, dir_flags, Mode::empty()) {
            Ok(fd) => Ok(fd),
            Err(nix::Error::ENOENT) => {
                match mkdirat(at, comp, Mode::from_bits_truncate(0o700)) {
                    Ok(()) | Err(nix::Error::EEXIST) => {}
                    Err(e) => return Err(err(&format!("mkdir {comp}"), e)),
                }
                fchownat(at, comp, Some(uid), Some(gid), AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map_err(|e| err(&format!("chown {comp}"), e))?;
                openat(at, comp, dir_flags, Mode::empty()).map_err(|e| err(comp, e))
            }
            Err(e) => Err(err(comp, e)),
        }
    };
    let mut dir = home;
    for comp in home_mailbox.split('/').filter(|c| !c.is_empty()) {
        if comp == "." || comp == ".." {
            return Err(format!("home_mailbox {home_mailbox}: no . or .. allowed"));
        }
        dir = step(&dir, comp)?;
    }
    let tmp = step(&dir, "tmp")?;
    let new = step(&dir, "new")?;
    step(&dir, "cur")?;
    match op {
        "create" => {
            let fd = openat(
                &tmp,
                name,
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
            .map_err(|e| err("create", e))?;
            fchown(&fd, Some(uid), Some(gid)).map_err(|e| err("chown", e))?;
            Ok(Some(fd))
        }
        _ => {
            renameat(&tmp, name, &new, name).map_err(|e| err("rename", e))?;
            nix::unistd::fsync(&new).map_err(|e| err("fsync", e))?;
            Ok(None)
        }
    }
}
