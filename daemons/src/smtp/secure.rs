//! The smtp client's TLS per connection: the policy for a next hop
//! (smtp_tls_security_level, or smtp_tls_policy_maps), STARTTLS or a
//! wrapper-mode handshake under it, and the log line Postfix writes.
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use postern_ipc::deliver::Status;
use postern_ipc::smtpd_broker as sb;

use super::dane::{self, HostTls};
use super::session::{self, Session};
use super::{Smtp, dest, tls};
use crate::log;

/// smtp_tls_policy_maps or lmtp_tls_policy_maps: the table and the
/// settings its policies are made with, and the policies made so far,
/// one per distinct table value.
pub(super) struct PolicyMaps {
    pub(super) table: sb::Table,
    /// The parameter's name, for messages.
    pub(super) param: &'static str,
    /// Whether the dane levels can be honoured (not for LMTP).
    pub(super) dane: bool,
    pub(super) roots: tls::Anchors,
    pub(super) servername: String,
    pub(super) cert_match: tls::CertMatch,
    pub(super) suites: super::suites::Suites,
    pub(super) made: RefCell<HashMap<tls::Entry, Rc<tls::Policy>>>,
}

impl Smtp {
    /// smtp_tls_wrappermode: the handshake on the new connection.
    pub(super) async fn wrap_tls(
        &self,
        pol: &tls::Policy,
        s: &mut Session,
        nexthop: &str,
    ) -> Result<(), session::Failure> {
        let Some(name) = pol.name(&s.host, nexthop) else {
            return Err(session::Failure::Tls(format!(
                "no usable TLS server name for {}",
                s.host
            )));
        };
        let connector = pol.connector_for(&s.host, nexthop);
        s.tls_handshake(&connector, name, self.s.starttls_timeout)
            .await?;
        self.log_tls(pol, s);
        Ok(())
    }

    fn log_tls(&self, pol: &tls::Policy, s: &Session) {
        log::line(&format!(
            "{} TLS connection established to {}[{}]:{}: {}{}",
            pol.trust_word(),
            s.host,
            s.peer,
            s.addr.port(),
            s.tls.clone().unwrap_or_default(),
            if s.tls_resumed() { " (resumed)" } else { "" }
        ));
    }

    /// STARTTLS per the policy. Err(Reply) for a refused STARTTLS;
    /// Err(Tls) for a failed handshake or an untrusted certificate.
    pub(super) async fn start_tls(
        &self,
        pol: &tls::Policy,
        s: &mut Session,
        nexthop: &str,
    ) -> Result<(), session::Failure> {
        let level = pol.level;
        if !s.ext.starttls {
            if level.required() {
                return Err(session::Failure::Tls(format!(
                    "TLS is required, but was not offered by host {}[{}]",
                    s.host, s.peer
                )));
            }
            return Ok(());
        }
        let Some(name) = pol.name(&s.host, nexthop) else {
            return Err(session::Failure::Tls(format!(
                "no usable TLS server name for {}",
                s.host
            )));
        };
        let connector = pol.connector_for(&s.host, nexthop);
        s.starttls(
            &connector,
            name,
            &self.s.helo_name,
            &self.s.t,
            self.s.starttls_timeout,
        )
        .await?;
        self.log_tls(pol, s);
        Ok(())
    }

    /// The TLS policy for `nexthop`: smtp_tls_policy_maps by the next hop
    /// as written (`[host]:port`, `domain`), then a domain's parents as
    /// `.parent`; else smtp_tls_security_level's. A table that cannot be
    /// read, or a policy Postern cannot honour, defers the delivery.
    pub(super) async fn tls_policy(
        &self,
        nexthop: &str,
    ) -> Result<Rc<tls::Policy>, (Status, String, String)> {
        let Some(maps) = &self.maps else {
            return Ok(self.tls.clone());
        };
        Ok(self
            .table_policy(maps, nexthop, tls::policy_keys(nexthop))
            .await?
            .unwrap_or_else(|| self.tls.clone()))
    }

    /// The policy of the first of `keys` a policy table (smtp_tls_ or
    /// lmtp_tls_policy_maps) has an entry for; None: no entry.
    pub(super) async fn table_policy(
        &self,
        maps: &PolicyMaps,
        nexthop: &str,
        keys: Vec<String>,
    ) -> Result<Option<Rc<tls::Policy>>, (Status, String, String)> {
        let param = maps.param;
        let deferred = |dsn: &str, text: String| (Status::Deferred, dsn.to_string(), text);
        let unusable = |e: String| deferred("4.7.5", format!("{param}: {nexthop}: {e}"));
        let mut value = None;
        for k in keys {
            match self.broker.lookup(maps.table, &k).await {
                Ok(Some(v)) => {
                    value = Some(v);
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(deferred("4.3.0", format!("{param} lookup error: {e}")));
                }
            }
        }
        let Some(v) = value else {
            return Ok(None);
        };
        let entry = tls::parse_entry(&v).map_err(unusable)?;
        if entry.level.is_dane() && !maps.dane {
            return Err(unusable(format!(
                "the {} level is not supported here",
                entry.level.name()
            )));
        }
        if let Some(p) = maps.made.borrow().get(&entry) {
            return Ok(Some(p.clone()));
        }
        // tafile=: the anchors replace the CAs (the master opens the files
        // the tables name for us).
        let roots = if entry.tafiles.is_empty() {
            maps.roots.clone()
        } else {
            self.trust_anchors(&entry.tafiles).await.map_err(unusable)?
        };
        let mut p = maps
            .suites
            .choice(entry.level, &entry.overrides)
            .and_then(|choice| {
                tls::Policy::with_matches(
                    entry.level,
                    entry.servername.as_deref().unwrap_or(&maps.servername),
                    (roots, self.cert.clone()),
                    maps.cert_match.for_level(entry.level, &entry.matches),
                    maps.cert_match.digest,
                    &choice,
                )
            })
            .map_err(unusable)?;
        p.overrides = entry.overrides.clone();
        let p = Rc::new(p);
        maps.made.borrow_mut().insert(entry, p.clone());
        Ok(Some(p))
    }

    /// The policy of one host: the next hop's, or for `dane` and
    /// `dane-only` what its TLSA records say (smtp/dane.rs); where DANE
    /// does not authenticate the host, an MTA-STS policy in enforce mode
    /// (`sts`) asks for verified TLS. Err: this host cannot be used now.
    pub(super) async fn host_policy(
        &self,
        pol: &Rc<tls::Policy>,
        nh: &dest::Nexthop,
        h: &dest::Host,
        sts: Option<&postern_ipc::sts::Policy>,
    ) -> Result<Rc<tls::Policy>, (Status, String, String)> {
        let enforced = super::sts::enforces(sts);
        if !pol.level.is_dane() {
            return if enforced {
                self.sts_verified()
            } else {
                Ok(pol.clone())
            };
        }
        let deferred = |dsn: &str, text: String| (Status::Deferred, dsn.to_string(), text);
        let Some((mx_secure, host)) = &h.dnssec else {
            // smtp_dns_support_level is not dnssec (conf --check says so).
            log::line(&format!(
                "warning: {}: {} configured with dnssec lookups disabled",
                nh.host,
                if pol.level == tls::Level::DaneOnly {
                    "dane-only"
                } else {
                    "dane"
                }
            ));
            if pol.level == tls::Level::DaneOnly {
                return Err(deferred(
                    "4.7.5",
                    format!(
                        "{}: dane-only configured with dnssec lookups disabled",
                        nh.host
                    ),
                ));
            }
            return if enforced {
                self.sts_verified()
            } else {
                self.fallback_for(tls::Level::May, &pol.overrides)
            };
        };
        match dane::host_tls(
            &self.dns,
            pol.level,
            self.s.insecure_mx,
            *mx_secure,
            host,
            &nh.host,
            nh.port,
        )
        .await
        {
            HostTls::Level(_) if enforced => self.sts_verified(),
            HostTls::Level(l) => self.fallback_for(l, &pol.overrides),
            HostTls::Dane {
                records,
                names,
                verified,
            } => {
                // A raw public key, unless this host had none to send.
                let raw = !self.no_raw_key.borrow().contains(&h.name);
                self.s
                    .suites
                    .choice(tls::Level::Dane, &pol.overrides)
                    .and_then(|c| {
                        tls::Policy::dane(records, &names, (verified, raw), self.cert.clone(), &c)
                    })
                    .map(Rc::new)
                    .map_err(|e| deferred("4.7.5", e))
            }
            HostTls::Defer(dsn, text) => Err(deferred(&dsn, text)),
        }
    }

    /// The `may` or `encrypt` policy DANE falls back to (with the policy
    /// entry's protocol and cipher attributes), made once.
    pub(super) fn fallback_for(
        &self,
        level: tls::Level,
        overrides: &tls::Overrides,
    ) -> Result<Rc<tls::Policy>, (Status, String, String)> {
        let key = (level, overrides.clone());
        if let Some(p) = self.fallback.borrow().get(&key) {
            return Ok(p.clone());
        }
        let p = self
            .s
            .suites
            .choice(level, overrides)
            .and_then(|c| {
                tls::Policy::new(
                    level,
                    &self.tls.servername,
                    tls::Anchors::empty(),
                    self.cert.clone(),
                    &c,
                )
            })
            .map_err(|e| (Status::Deferred, "4.7.5".to_string(), e))?;
        let p = Rc::new(p);
        self.fallback.borrow_mut().insert(key, p.clone());
        Ok(p)
    }

    /// The trust anchors of `files`, opened by the master (only files a
    /// `tafile=` of smtp_tls_policy_maps names).
    async fn trust_anchors(&self, files: &[String]) -> Result<tls::Anchors, String> {
        let mut roots = tls::Anchors::empty();
        for f in files {
            let fd = match self.sb.open_table(std::path::Path::new(f)).await {
                Ok(Some(fd)) => fd,
                Ok(None) => return Err(format!("{f}: No such file or directory")),
                Err(e) => return Err(format!("{f}: {e}")),
            };
            let pem = crate::fsutil::read_whole(&fd, crate::fsutil::SMALL_FILE_CAP)
                .map_err(|e| format!("{f}: {e}"))?;
            roots.add_pem(&pem, f)?;
        }
        Ok(roots)
    }
}

/// smtp_tls_trust_anchor_file, read before the jail: None when unset.
pub(super) fn trust_anchor_file(
    p: &postern_config::Params,
) -> Result<Option<tls::Anchors>, String> {
    let files = p
        .list("smtp_tls_trust_anchor_file")
        .map_err(|e| e.to_string())?;
    if files.is_empty() {
        return Ok(None);
    }
    let mut roots = tls::Anchors::empty();
    for f in files {
        let pem = crate::fsutil::read_path(&f, crate::fsutil::SMALL_FILE_CAP)
            .map_err(|e| format!("smtp_tls_trust_anchor_file: cannot read {f}: {e}"))?;
        roots.add_pem(&pem, &f)?;
    }
    Ok(Some(roots))
}
