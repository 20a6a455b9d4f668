//! Where an instance keeps the files that several roles and the command
//! line agree on, derived from main.cf alone.
use std::path::{Path, PathBuf};

use postern_config::Params;

/// The maildrop directory: outside the queue (which only the broker may
/// touch), writable by every local user, readable by pickup alone.
pub fn maildrop_dir(params: &Params) -> PathBuf {
    Path::new(params.str("data_directory")).join("maildrop")
}

/// The public socket sendmail connects to.
pub fn pickup_socket(params: &Params) -> PathBuf {
    Path::new(params.str("data_directory"))
        .join("public")
        .join("pickup")
}

/// The public socket mailq uses when the caller may not use the control
/// socket (Postfix's public/showq).
pub fn showq_socket(params: &Params) -> PathBuf {
    Path::new(params.str("data_directory"))
        .join("public")
        .join("showq")
}

/// The state store's files (the cache role alone may open it).
pub fn cache_dir(params: &Params) -> PathBuf {
    Path::new(params.str("data_directory")).join("cache")
}
