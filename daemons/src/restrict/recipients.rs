//! Who mail may be for: the destinations this machine accepts mail for
//! (mydestination, relay_domains, virtual alias and virtual mailbox
//! domains; permit_auth_destination and reject_unauth_destination), and
//! whether a recipient or sender is known (Postfix's check_rcpt_maps:
//! reject_unlisted_recipient and reject_unlisted_sender).
use super::eval::{Run, Status, domain_of, reply};
use super::{Class, Lookups, R, Virtual, keys};

impl<L: Lookups> Run<'_, L> {
    /// Is the recipient's domain one we accept mail for: mydestination,
    /// relay_domains, virtual_alias_domains or virtual_mailbox_domains? An
    /// error is a lookup failure of the virtual domains.
    pub(super) async fn authorized_destination(&mut self) -> Result<bool, String> {
        let d = domain_of(self.f.rcpt.unwrap_or(""));
        if self.access.is_local_domain(d) || self.access.is_relay_domain(d) {
            return Ok(true);
        }
        Ok(self.virtual_table(Virtual::Alias).await?.1
            || self.virtual_table(Virtual::Mailbox).await?.1)
    }

    /// permit_auth_destination, reject_unauth_destination,
    /// defer_unauth_destination.
    pub(super) async fn destination_check(&mut self, r: &R) -> Status {
        let rcpt = self.f.rcpt.unwrap_or("");
        let authorized = match self.authorized_destination().await {
            Ok(a) => a,
            Err(e) => {
                crate::warn!("{e}");
                return self.lookup_error(rcpt);
            }
        };
        let c = &self.policy.codes;
        match r {
            R::PermitAuthDestination if authorized => Status::Ok,
            R::RejectUnauthDestination | R::DeferUnauthDestination if !authorized => {
                let (code, enh) = if *r == R::RejectUnauthDestination {
                    (c.relay_domains_reject, "5.7.1")
                } else {
                    (c.relay_domains_reject.saturating_sub(100), "4.7.1")
                };
                self.reject(reply(code, enh, format!("<{rcpt}>: Relay access denied")))
            }
            _ => Status::Dunno,
        }
    }

    /// The virtual alias or mailbox tables and domains for the recipient.
    async fn virtual_table(&mut self, which: Virtual) -> Result<(bool, bool), String> {
        let (configured, slot) = match which {
            Virtual::Alias => (self.policy.virtual_alias_maps, 0),
            Virtual::Mailbox => (self.policy.virtual_mailbox_domains, 1),
        };
        if !configured {
            return Ok((false, false));
        }
        if let Some(a) = self.virtual_answers[slot] {
            return Ok(a);
        }
        let a = self
            .lk
            .virtual_table(which, self.f.rcpt.unwrap_or(""))
            .await?;
        self.virtual_answers[slot] = Some(a);
        Ok(a)
    }

    /// The virtual tables for `addr`: the recipient's answers are kept.
    async fn virtual_for(
        &mut self,
        which: Virtual,
        addr: &str,
        class: Class,
    ) -> Result<(bool, bool), String> {
        if class == Class::Recipient {
            self.virtual_table(which).await
        } else {
            match which {
                Virtual::Alias if !self.policy.virtual_alias_maps => Ok((false, false)),
                Virtual::Mailbox if !self.policy.virtual_mailbox_domains => Ok((false, false)),
                _ => self.lk.virtual_table(which, addr).await,
            }
        }
    }

    /// check_recipient_rcpt_maps / check_sender_rcpt_maps.
    pub(super) async fn unlisted(&mut self, addr: &str, class: Class) -> Status {
        if class == Class::Recipient {
            self.rcpt_checked = true;
        }
        let (local, domain) = match addr.rsplit_once('@') {
            Some((l, d)) => (l, d),
            None => (addr, ""),
        };
        let base = keys::strip_extension(local, &self.policy.recipient_delimiter);
        let is_local = self.access.is_local_domain(domain);
        // An address virtual_alias_maps knows is a known recipient; an
        // unknown one in a virtual alias domain is not (Postfix's
        // check_rcpt_maps). mydestination takes precedence.
        let (aliased, alias_domain) = match self.virtual_for(Virtual::Alias, addr, class).await {
            Ok(a) => a,
            Err(e) => {
                crate::warn!("{e}");
                return self.lookup_error(addr);
            }
        };
        if aliased {
            return Status::Dunno;
        }
        let is_alias_domain = alias_domain && !is_local;
        let (mailbox, mailbox_domain) = if is_local || is_alias_domain {
            (false, false)
        } else {
            match self.virtual_for(Virtual::Mailbox, addr, class).await {
                Ok(a) => a,
                Err(e) => {
                    crate::warn!("{e}");
                    return self.lookup_error(addr);
                }
            }
        };
        let is_relay =
            !is_local && !is_alias_domain && !mailbox_domain && self.access.is_relay_domain(domain);
        let (code, table) = if is_alias_domain {
            (
                self.policy.codes.unknown_virtual_alias,
                "virtual alias table",
            )
        } else if mailbox_domain {
            if !self.policy.virtual_mailbox_maps || mailbox {
                return Status::Dunno;
            }
            (
                self.policy.codes.unknown_virtual_mailbox,
                "virtual mailbox table",
            )
        } else if is_local {
            let lower = base.to_ascii_lowercase();
            let dbs = self.policy.double_bounce_sender.to_ascii_lowercase();
            if !self.policy.local_recipient_maps
                || ["postmaster", "mailer-daemon", dbs.as_str()].contains(&lower.as_str())
            {
                return Status::Dunno;
            }
            (
                self.policy.codes.unknown_local_recipient,
                "local recipient table",
            )
        } else if is_relay && self.policy.relay_recipient_maps {
            (
                self.policy.codes.unknown_relay_recipient,
                "relay recipient table",
            )
        } else {
            return Status::Dunno;
        };
        match self.lk.listed(addr, base, is_local).await {
            Ok(true) => Status::Dunno,
            Ok(false) => self.reject(reply(
                code,
                if class == Class::Sender {
                    "5.1.0"
                } else {
                    "5.1.1"
                },
                format!(
                    "<{addr}>: {} rejected: User unknown in {table}",
                    class.text()
                ),
            )),
            Err(e) => {
                crate::warn!("{e}");
                self.lookup_error(addr)
            }
        }
    }
}
