//! The client-certificate restrictions (Postfix's check_ccert_access,
//! permit_tls_clientcerts, permit_tls_all_clientcerts). Fingerprints match
//! whether or not the certificate chains to a trusted CA; only
//! permit_tls_all_clientcerts needs a trusted one.
use super::eval::{Run, Status};
use super::{Class, Lookups};

impl<L: Lookups> Run<'_, L> {
    /// Logs Postfix's warning when a certificate check cannot see one
    /// because the listener does not ask for it.
    fn not_asked(&self, what: &str) {
        if self.f.ccert.is_none() && self.f.tls && !self.policy.ask_ccert {
            crate::warn!("{what} is requested, but \"smtpd_tls_ask_ccert = no\"");
        }
    }

    pub(super) fn permit_all_clientcerts(&self) -> Status {
        self.not_asked("permit_tls_all_clientcerts");
        match self.f.ccert {
            Some(c) if c.trusted => Status::Ok,
            _ => Status::Dunno,
        }
    }

    /// relay_clientcerts: the public-key fingerprint, then the
    /// certificate's.
    pub(super) async fn permit_clientcerts(&mut self) -> Status {
        self.not_asked("permit_tls_clientcerts");
        let Some(c) = self.f.ccert else {
            return Status::Dunno;
        };
        for fp in [&c.pkey_fingerprint, &c.fingerprint] {
            for map in &self.policy.relay_clientcerts {
                match self.lk.access(map, vec![fp.clone()]).await {
                    Ok(Some(_)) => return Status::Ok,
                    Ok(None) => {}
                    Err(e) => {
                        crate::warn!(
                            "relay_clientcerts: lookup error for fingerprint '{}', pkey fingerprint {}: {e}",
                            c.fingerprint,
                            c.pkey_fingerprint
                        );
                        return self.lookup_error(&c.cn);
                    }
                }
            }
        }
        Status::Dunno
    }

    /// check_ccert_access: the certificate fingerprint, then the public
    /// key's; a rejection names the certificate's CommonName.
    pub(super) async fn ccert_access(&mut self, map: &str) -> Status {
        self.not_asked("check_ccert_access");
        let Some(c) = self.f.ccert else {
            return Status::Dunno;
        };
        for fp in [&c.fingerprint, &c.pkey_fingerprint] {
            match self.lk.access(map, vec![fp.clone()]).await {
                Ok(Some((_, value))) => {
                    let st = self.table_result(map, &value, &c.cn, Class::Ccert).await;
                    if !matches!(st, Status::Dunno) {
                        return st;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    crate::warn!("{map}: {e}");
                    return self.lookup_error(&c.cn);
                }
            }
        }
        Status::Dunno
    }
}
