//! The instance's directories, created on first start with the right owners
//! and modes: there is no manual setup step. Runs as root or as the user.
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use postern_config::{Params, Role};

use crate::roles;

/// Where an instance keeps its runtime state.
#[derive(Debug, Clone)]
pub struct Layout {
    pub data: PathBuf,
    pub queue: PathBuf,
    pub pid_file: PathBuf,
    pub lock_file: PathBuf,
    pub control: PathBuf,
}

impl Layout {
    pub fn new(params: &Params) -> Layout {
        let data = PathBuf::from(params.str("data_directory"));
        Layout {
            pid_file: data.join("master.pid"),
            lock_file: data.join("master.lock"),
            control: data.join("master.sock"),
            queue: PathBuf::from(params.str("queue_directory")),
            data,
        }
    }
}

/// Creates `path` if needed and makes it owned by uid:gid with `mode`.
fn ensure_dir(path: &Path, owner: Option<(u32, u32)>, mode: u32) -> Result<(), String> {
    std::fs::create_dir_all(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let md = std::fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !md.is_dir() {
        return Err(format!("{} is not a directory", path.display()));
    }
    if let Some((uid, gid)) = owner
        && (md.uid() != uid || md.gid() != gid)
    {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(|e| format!("cannot chown {} to {uid}:{gid}: {e}", path.display()))?;
    }
    if md.mode() & 0o7777 != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("cannot chmod {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Creates every directory the roles need. Root gives each its role's owner.
pub fn prepare(params: &Params) -> Result<Layout, String> {
    let layout = Layout::new(params);
    let root = nix::unistd::Uid::effective().is_root();
    let owner = |r: Role| root.then(|| roles::ids(r, params));
    ensure_dir(&layout.data, root.then_some((0, 0)), 0o755)?;
    ensure_dir(&layout.queue, owner(Role::Broker), 0o700)?;
    for sub in ["slots", "corrupt"] {
        ensure_dir(&layout.queue.join(sub), owner(Role::Broker), 0o700)?;
    }
    // sendmail's way in: the public socket's directory, and the maildrop
    // (see SECURITY.md): every user may create files there, nobody may list
    // it, and the setgid bit gives each file pickup's group.
    ensure_dir(&layout.data.join("public"), root.then_some((0, 0)), 0o755)?;
    ensure_dir(
        &crate::paths::maildrop_dir(params),
        owner(Role::Pickup),
        0o3733,
    )?;
    ensure_dir(&crate::paths::cache_dir(params), owner(Role::Cache), 0o700)?;
    ensure_dir(
        std::path::Path::new(params.str("mail_spool_directory")),
        owner(Role::Local),
        0o700,
    )?;
    // The password file's directory: created (and kept) root-owned and
    // readable by the auth role's group when it is ours (under
    // data_directory); an admin's own directory elsewhere is left alone.
    if let Some(d) = roles::sasl_dir(params)
        && (d.starts_with(&layout.data) || !d.exists())
    {
        let gid = roles::ids(Role::Auth, params).1;
        ensure_dir(
            &d,
            root.then_some((0, gid)),
            if root { 0o750 } else { 0o700 },
        )?;
    }
    Ok(layout)
}
