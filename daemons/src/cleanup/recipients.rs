//! The recipients as queued, after REDIRECT, BCC and rewriting.
use postern_ipc::smtpd_cleanup::{Failure, Recipient};

use super::{MAX_RECIPIENTS, Settings, Txn, fail, rewrite};

impl Txn {
    /// The recipients as queued: REDIRECT replaces them all; each is
    /// rewritten (canonical, masquerade) and may bring a BCC
    /// (recipient_bcc_maps); BCC addresses from the tables and the access
    /// and content checks are added and rewritten the same way; then every
    /// one is expanded through virtual_alias_maps. Duplicates are dropped.
    pub(super) async fn final_recipients(
        &mut self,
        s: &Settings,
    ) -> Result<Vec<Recipient>, Failure> {
        let rw = &s.rewrite;
        let mut given = std::mem::take(&mut self.rcpts);
        if !self.effects.redirect.is_empty() {
            given = vec![Recipient {
                address: self.effects.redirect.clone(),
                orcpt: String::new(),
                notify: 0,
            }];
        }
        let mut bcc = std::mem::take(&mut self.auto_bcc);
        let mut rewritten = Vec::with_capacity(given.len());
        for r in given {
            let address = rw
                .address(
                    &s.tables,
                    &self.id,
                    rewrite::Kind::Recipient,
                    false,
                    &r.address,
                )
                .await?;
            if self.bcc_ok
                && let Some(b) = rw
                    .bcc(&s.tables, &self.id, rewrite::Kind::Recipient, &address)
                    .await?
            {
                bcc.push(b);
            }
            rewritten.push((r, address));
        }
        bcc.extend(std::mem::take(&mut self.effects.bcc));
        for b in bcc {
            let address = rw
                .address(&s.tables, &self.id, rewrite::Kind::Recipient, false, &b)
                .await?;
            let r = Recipient {
                address: b,
                orcpt: String::new(),
                notify: 0,
            };
            rewritten.push((r, address));
        }
        let mut out: Vec<Recipient> = Vec::with_capacity(rewritten.len());
        let mut seen = std::collections::HashSet::new();
        for (r, address) in rewritten {
            for a in rw.expand(&s.tables, &self.id, &address).await? {
                // The address the sender gave, for a DSN about the new one.
                let orcpt = if r.orcpt.is_empty() && !a.eq_ignore_ascii_case(&r.address) {
                    format!("rfc822;{}", r.address)
                } else {
                    r.orcpt.clone()
                };
                if seen.insert((a.to_ascii_lowercase(), orcpt.clone(), r.notify)) {
                    if out.len() >= MAX_RECIPIENTS {
                        return Err(fail(452, "4.5.3", "Error: too many recipients"));
                    }
                    out.push(Recipient {
                        address: a,
                        orcpt,
                        notify: r.notify,
                    });
                }
            }
        }
        Ok(out)
    }
}
