//! `postern reload` without a broker restart: the broker keeps its pid,
//! its queue and every channel, and takes the new configuration's keys,
//! certificates and tables. The master opened the key files (the jail has
//! no path to them) and sent their descriptors with the new slice.
//!
//! Key channels from smtpd and smtp are closed when the keys change (and
//! only then): each
//! was opened with an identity (the certificate chain) that the new key no
//! longer matches. They reconnect at once and learn the new identity, so
//! the next handshake presents the new certificate.
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::rc::Rc;

use postern_config::Params;
use postern_ipc::master::Reload;
use tokio::sync::watch;

use super::keys::KeyStore;
use super::{Lookups, Shared, lookups};
use crate::{info, warn};

/// What a reload may change while the broker runs; anything else in the
/// broker's slice needs a restart (the master compares the slices).
pub const LIVE: &[&str] = &[
    "smtpd_tls_cert_file",
    "smtpd_tls_key_file",
    "smtpd_tls_chain_files",
    "smtp_tls_cert_file",
    "smtp_tls_key_file",
    "alias_maps",
    "local_recipient_maps",
    "smtpd_sender_login_maps",
    "smtp_sasl_password_maps",
    "smtp_tls_policy_maps",
    "lmtp_tls_policy_maps",
    "queue_minfree",
    "dkim_key_table",
    "dkim_signing_table",
];

/// The current keys and tables, swapped whole by a reload.
pub struct Current {
    pub keys: watch::Sender<Rc<KeyStore>>,
    pub dkim: watch::Sender<Rc<super::dkim::DkimStore>>,
    pub lookups: watch::Sender<Rc<Lookups>>,
}

pub fn apply(st: &Shared, current: &Current, r: Reload) {
    let params = match Params::from_pairs(r.params) {
        Ok(p) => p,
        Err(e) => {
            warn!("reload -- bad configuration from master: {e}; nothing changed");
            return;
        }
    };
    let files: HashMap<String, Result<OwnedFd, String>> =
        r.files.into_iter().map(|f| (f.path, f.file)).collect();
    let read = |path: &str| -> Result<Vec<u8>, String> {
        match files.get(path) {
            Some(Ok(fd)) => crate::fsutil::read_whole(fd, crate::fsutil::SMALL_FILE_CAP)
                .map_err(|e| format!("cannot read {path}: {e}")),
            Some(Err(e)) => Err(format!("cannot open {path}: {e}")),
            None => Err(format!("{path}: the master did not open it")),
        }
    };
    let keys = current.keys.borrow().reloaded(&params, &read);
    // Every key channel closes and reconnects with the new identity; with
    // the same identities (nothing renewed, or a renewal that failed and
    // kept the current keys) they stay, and no handshake meets a
    // reconnecting smtpd.
    if !keys.same_identities(&current.keys.borrow()) {
        current.keys.send_replace(Rc::new(keys));
    }
    let dkim = super::dkim::DkimStore::load(&params, &read, Some(&current.dkim.borrow()));
    current.dkim.send_replace(Rc::new(dkim));
    match lookups(&params) {
        Ok(l) => {
            current.lookups.send_replace(Rc::new(l));
        }
        Err(e) => warn!("reload -- {e}; keeping the current tables"),
    }
    st.borrow_mut().minfree = params.size("queue_minfree").unwrap_or(0);
    info!("reload -- keys and tables reloaded; queue and channels kept");
}
