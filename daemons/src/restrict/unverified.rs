//! reject_unverified_recipient and reject_unverified_sender (Postfix's
//! reject_unverified_address): ask the verify role what a probe of the
//! address found, polling a few times while a probe is under way, and
//! answer with the unverified_* codes.
use postern_ipc::verify::Status as V;

use super::eval::{Run, Status, reply};
use super::{Class, Lookups};

/// The settings of one of the two restrictions.
#[derive(Debug, Clone)]
pub struct Codes {
    /// unverified_*_defer_code: the probe failed temporarily or is pending.
    pub defer: u16,
    /// unverified_*_reject_code: the probe failed for good.
    pub reject: u16,
    /// unverified_*_reject_reason: replaces the probe's reason.
    pub reason: String,
    /// unverified_*_tempfail_action is defer_if_permit (else defer).
    pub defer_if_permit: bool,
}

impl<L: Lookups> Run<'_, L> {
    pub(super) async fn unverified(&mut self, class: Class) -> Status {
        let (addr, codes, dsn) = match class {
            Class::Sender => (self.f.sender, &self.policy.verify_sender, "4.1.7"),
            _ => (self.f.rcpt, &self.policy.verify_recipient, "4.1.1"),
        };
        let Some(addr) = addr.filter(|a| !a.is_empty()) else {
            return Status::Dunno;
        };
        let codes = codes.clone();
        let what = class.text();
        let mut polls = 0;
        let answer = loop {
            let a = self.lk.verify(addr).await;
            polls += 1;
            match &a {
                Ok(r) if r.status == V::InProgress && polls < self.policy.verify_poll_count => {
                    self.lk.sleep(self.policy.verify_poll_delay).await;
                }
                _ => break a,
            }
        };
        let defer = |run: &mut Self, code: u16, text: String| {
            let r = reply(code, dsn, text);
            if codes.defer_if_permit {
                run.defer_if_permit(r)
            } else {
                run.reject(r)
            }
        };
        let r = match answer {
            Err(e) => {
                crate::warn!("verify service failure: {e}");
                return defer(
                    self,
                    450,
                    format!("<{addr}>: {what} rejected: address verification problem"),
                );
            }
            Ok(r) => r,
        };
        let code = match r.status {
            V::Deliverable => return Status::Dunno,
            V::InProgress | V::Deferred => codes.defer,
            V::Undeliverable => codes.reject,
        };
        let why = if codes.reason.is_empty() {
            r.text
        } else {
            codes.reason.clone()
        };
        match code / 100 {
            // "Unlike elsewhere in Postfix, you can specify 250 in order to
            // accept the address anyway."
            2 => Status::Dunno,
            4 => defer(
                self,
                code,
                format!("<{addr}>: {what} rejected: unverified address: {why}"),
            ),
            _ => self.reject(reply(
                code,
                dsn,
                format!("<{addr}>: {what} rejected: undeliverable address: {why}"),
            )),
        }
    }
}
