//! Evaluating restriction lists as Postfix's smtpd_check.c does:
//! - each list stops at its first permit or reject; a reject ends the
//!   whole check, a permit only that list;
//! - `defer_if_permit` turns a final permit into 450, `defer_if_reject` a
//!   later 5xx reject into 450, `warn_if_reject` logs the next
//!   restriction's reject as `reject_warning` and goes on;
//! - with smtpd_delay_reject (the default) the client, HELO and sender
//!   lists are evaluated at RCPT, each again for every recipient.
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::Duration;

use postern_proto::smtp::Reply;

use super::keys;
use super::{Class, LoginCheck, Lookups, Policy, R};
use crate::access::Access;

/// What the restrictions can see of the session.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub ip: IpAddr,
    /// The client's host name, or "unknown".
    pub name: &'a str,
    /// `name[addr]`.
    pub namaddr: &'a str,
    /// The client's PTR name (not forward-confirmed), or "unknown".
    pub reverse_name: &'a str,
    pub name_status: super::NameStatus,
    pub reverse_status: super::NameStatus,
    pub helo: Option<&'a str>,
    /// The transaction's sender; None before MAIL.
    pub sender: Option<&'a str>,
    /// The recipient being decided on.
    pub rcpt: Option<&'a str>,
    pub login: Option<&'a str>,
    pub tls: bool,
    /// The client sent commands ahead without PIPELINING.
    pub pipelined: bool,
    /// Recipients accepted so far in this transaction.
    pub rcpt_count: usize,
    /// The client's TLS certificate, if it sent one.
    pub ccert: Option<&'a crate::tls::ccert::Ccert>,
    /// What a policy request tells besides (smtpd's sessions; None for
    /// local submission, which asks no policy server).
    pub session: Option<&'a super::SessionInfo>,
}

/// `defer_if_permit` raised by an earlier stage of the session (kept
/// between stages when smtpd_delay_reject is off).
#[derive(Debug, Clone, Default)]
pub struct Memo {
    client: Option<Reply>,
    helo: Option<Reply>,
    sender: Option<Reply>,
}

/// A log line the evaluation asks for: Postfix's `log_whatsup`
/// (`reject_warning`, `warn`, `info`, `hold`, `discard`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub what: &'static str,
    pub text: String,
}

/// Actions that accept and change what happens to the message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    pub discard: Option<String>,
    pub hold: Option<String>,
    pub redirect: Option<String>,
    pub bcc: Vec<String>,
    pub prepend: Vec<String>,
}

/// The result of one decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Accept,
    Reject(Reply),
}

pub(super) enum Status {
    Ok,
    Dunno,
    Reject(Reply),
}

/// One evaluation (one command's decision).
pub struct Run<'a, L: Lookups> {
    pub(super) lk: &'a L,
    pub(super) policy: &'a Policy,
    pub(super) access: &'a Access,
    pub(super) f: Facts<'a>,
    pub(super) warn_if_reject: bool,
    pub(super) defer_if_permit: Option<Reply>,
    pub(super) defer_if_reject: Option<Reply>,
    pub(super) depth: u32,
    pub(super) rcpt_checked: bool,
    /// Evaluating smtpd_end_of_data_restrictions (no PREPEND there).
    pub(super) eod: bool,
    pub(super) owners: Option<Option<Vec<String>>>,
    /// The broker's virtual alias and virtual mailbox answers for the
    /// recipient (listed, in one of the domains), each asked once.
    pub(super) virtual_answers: [Option<(bool, bool)>; 2],
    pub notes: Vec<Note>,
    pub effects: Effects,
    /// The restriction that refused (for the reject counters).
    pub fired: Option<&'static str>,
}

pub(super) fn reply(code: u16, enh: &str, text: String) -> Reply {
    Reply::new(code, enh, &text)
}

/// Is `name` a syntactically valid host name (Postfix's valid_hostname)?
pub fn valid_hostname(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 255 {
        return false;
    }
    let labels_ok = name.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    labels_ok && !name.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

fn address_literal(name: &str) -> bool {
    name.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .is_some_and(|a| {
            a.parse::<IpAddr>().is_ok()
                || a.strip_prefix("IPv6:")
                    .or_else(|| a.strip_prefix("ipv6:"))
                    .is_some_and(|x| x.parse::<std::net::Ipv6Addr>().is_ok())
        })
}

pub(super) fn domain_of(addr: &str) -> &str {
    addr.rsplit_once('@').map_or("", |(_, d)| d)
}

type Boxed<'s> = Pin<Box<dyn Future<Output = Status> + 's>>;

impl<'a, L: Lookups> Run<'a, L> {
    pub fn new(lk: &'a L, policy: &'a Policy, access: &'a Access, f: Facts<'a>) -> Self {
        Run {
            lk,
            policy,
            access,
            f,
            warn_if_reject: false,
            defer_if_permit: None,
            defer_if_reject: None,
            depth: 0,
            rcpt_checked: false,
            eod: false,
            owners: None,
            virtual_answers: [None; 2],
            notes: Vec::new(),
            effects: Effects::default(),
            fired: None,
        }
    }

    pub(super) fn note(&mut self, what: &'static str, text: String) {
        self.notes.push(Note { what, text });
    }

    /// smtpd_check_reject: warn_if_reject, defer_if_reject, soft_bounce,
    /// and the SMTP code's class copied into the DSN.
    pub(super) fn reject(&mut self, mut r: Reply) -> Status {
        if !(400..=599).contains(&r.code) {
            r = reply(450, "4.7.1", "Service unavailable".into());
        }
        if !self.warn_if_reject
            && r.code >= 500
            && let Some(d) = self.defer_if_reject.take()
        {
            return self.reject(d);
        }
        if self.policy.soft_bounce && r.code >= 500 {
            r.code -= 100;
        }
        if let Some(e) = r.enhanced.as_mut()
            && !e.is_empty()
        {
            let first = (b'0' + (r.code / 100) as u8) as char;
            e.replace_range(0..1, &first.to_string());
        }
        if self.warn_if_reject {
            self.note("reject_warning", r.summary());
            return Status::Dunno;
        }
        Status::Reject(r)
    }

    pub(super) fn server_error(&mut self) -> Status {
        self.reject(reply(451, "4.3.5", "Server configuration error".into()))
    }

    pub(super) fn lookup_error(&mut self, what: &str) -> Status {
        self.reject(reply(
            451,
            "4.3.0",
            format!("<{what}>: Temporary lookup failure"),
        ))
    }

    pub(super) fn defer_if_permit(&mut self, r: Reply) -> Status {
        if self.warn_if_reject {
            return self.reject(r);
        }
        if self.defer_if_permit.is_none() {
            self.defer_if_permit = Some(r);
        }
        Status::Dunno
    }

    pub(super) fn name_of(&self, class: Class) -> String {
        match class {
            Class::Client => self.f.namaddr.to_string(),
            Class::ReverseClient => format!("{}[{}]", self.f.reverse_name, self.f.ip),
            Class::Helo => self.f.helo.unwrap_or("").to_string(),
            Class::Sender => self.f.sender.unwrap_or("").to_string(),
            Class::Recipient => self.f.rcpt.unwrap_or("").to_string(),
            Class::Data => "DATA".into(),
            Class::EndOfData => "END-OF-MESSAGE".into(),
            Class::Ccert => self.f.ccert.map_or("", |c| c.cn.as_str()).to_string(),
        }
    }

    /// One list (generic_checks).
    pub(super) fn list<'s>(&'s mut self, list: &'s [R], class: Class) -> Boxed<'s> {
        Box::pin(async move {
            self.depth += 1;
            if self.depth > 100 {
                crate::warn!("restriction lists nest too deep");
                self.depth -= 1;
                return self.server_error();
            }
            let mut status = Status::Dunno;
            let mut warn_next = false;
            for r in list {
                if *r == R::WarnIfReject {
                    warn_next = true;
                    continue;
                }
                let set_warn = warn_next && !self.warn_if_reject;
                if set_warn {
                    self.warn_if_reject = true;
                }
                warn_next = false;
                status = self.one(r, class).await;
                // The innermost restriction that refused names the refusal.
                if matches!(status, Status::Reject(_)) && self.fired.is_none() {
                    self.fired = Some(r.check_name());
                }
                if set_warn {
                    self.warn_if_reject = false;
                }
                if !matches!(status, Status::Dunno) {
                    break;
                }
                if self.defer_if_permit.is_some() && self.defer_if_reject.is_some() {
                    break;
                }
            }
            self.depth -= 1;
            status
        })
    }

    async fn one(&mut self, r: &R, class: Class) -> Status {
        let f = self.f;
        let c = self.policy.codes.clone();
        let name = self.name_of(class);
        let what = class.text();
        match r {
            R::Permit => Status::Ok,
            R::Reject => self.reject(reply(
                c.reject,
                "5.7.1",
                format!("<{name}>: {what} rejected: Access denied"),
            )),
            R::Defer => self.reject(reply(
                c.defer,
                "4.3.2",
                format!("<{name}>: {what} rejected: Try again later"),
            )),
            R::DeferIfPermit => self.defer_if_permit(reply(
                450,
                "4.7.0",
                format!("<{name}>: {what} rejected: defer_if_permit requested"),
            )),
            R::DeferIfReject => {
                if self.defer_if_reject.is_none() {
                    self.defer_if_reject = Some(reply(
                        450,
                        "4.7.0",
                        format!("<{name}>: {what} rejected: defer_if_reject requested"),
                    ));
                }
                Status::Dunno
            }
            R::WarnIfReject => Status::Dunno,
            R::PermitMynetworks if self.access.in_mynetworks(f.ip) => Status::Ok,
            R::PermitSaslAuthenticated if f.login.is_some() => Status::Ok,
            R::PermitMynetworks | R::PermitSaslAuthenticated => Status::Dunno,
            R::PermitAuthDestination | R::RejectUnauthDestination | R::DeferUnauthDestination
                if f.rcpt.is_some() =>
            {
                self.destination_check(r).await
            }
            R::PermitAuthDestination | R::RejectUnauthDestination | R::DeferUnauthDestination => {
                Status::Dunno
            }
            R::SenderLogin(kind) => self.sender_login(*kind).await,

            R::Access(of, map) => self.access_check(*of, map).await,
            R::RejectUnverified(of) => self.unverified(*of).await,
            R::CcertAccess(map) => self.ccert_access(map).await,
            R::PermitTlsClientcerts => self.permit_clientcerts().await,
            R::PermitTlsAllClientcerts => self.permit_all_clientcerts(),
            R::RejectInvalidHelo => match f.helo {
                Some(h)
                    if !valid_hostname(h)
                        && !address_literal(h)
                        && h.parse::<IpAddr>().is_err() =>
                {
                    self.reject(reply(
                        c.invalid_hostname,
                        "5.5.2",
                        format!("<{h}>: Helo command rejected: Invalid name"),
                    ))
                }
                _ => Status::Dunno,
            },
            R::RejectNonFqdnHelo => match f.helo {
                Some(h)
                    if !address_literal(h)
                        && (!valid_hostname(h) || !h.trim_end_matches('.').contains('.')) =>
                {
                    self.reject(reply(
                        c.non_fqdn,
                        "5.5.2",
                        format!("<{h}>: Helo command rejected: need fully-qualified hostname"),
                    ))
                }
                _ => Status::Dunno,
            },
            R::RejectNonFqdnSender => match f.sender {
                Some(s) if !s.is_empty() => self.non_fqdn(s, Class::Sender),
                _ => Status::Dunno,
            },
            R::RejectNonFqdnRecipient => match f.rcpt {
                Some(s) if !s.is_empty() => self.non_fqdn(s, Class::Recipient),
                _ => Status::Dunno,
            },
            R::RejectUnlistedSender => match f.sender {
                Some(s) if !s.is_empty() => self.unlisted(s, Class::Sender).await,
                _ => Status::Dunno,
            },
            R::RejectUnlistedRecipient => match f.rcpt {
                Some(s) if !s.is_empty() => self.unlisted(s, Class::Recipient).await,
                _ => Status::Dunno,
            },
            R::RejectUnauthPipelining if f.pipelined => self.reject(reply(
                503,
                "5.5.0",
                format!("<{name}>: {what} rejected: Improper use of SMTP command pipelining"),
            )),
            R::RejectUnauthPipelining => Status::Dunno,
            R::RejectMultiRecipientBounce => {
                let at_rcpt = usize::from(class == Class::Recipient && f.rcpt.is_some());
                if f.sender == Some("") && f.rcpt_count + at_rcpt > 1 {
                    self.reject(reply(
                        c.multi_recipient_bounce,
                        "5.5.3",
                        format!("<{name}>: {what} rejected: Multi-recipient bounce"),
                    ))
                } else {
                    Status::Dunno
                }
            }
            R::RejectPlaintextSession if !f.tls => self.reject(reply(
                c.plaintext,
                "4.7.1",
                "Session encryption is required".into(),
            )),
            R::RejectPlaintextSession => Status::Dunno,
            R::RejectUnknownClient => self.unknown_client(false),
            R::RejectUnknownReverseClient => self.unknown_client(true),
            R::RejectUnknownHelo => self.unknown_helo().await,
            R::RejectUnknownSenderDomain => self.unknown_domain(Class::Sender).await,
            R::RejectUnknownRecipientDomain => self.unknown_domain(Class::Recipient).await,
            R::Dnsxl(kind, zone) => self.dnsxl(*kind, zone).await,
            R::Policy(service) => self.delegate(service, class).await,
            R::ServerAccess(of, kind, map) => self.server_access(*of, *kind, map).await,
            R::Sleep(secs) => {
                self.lk.sleep(Duration::from_secs(u64::from(*secs))).await;
                Status::Dunno
            }
            R::Unknown(n) => match self.policy.class(n) {
                // A restriction class: its list, in this list's context.
                Some(items) => {
                    let implicit = match class {
                        Class::Data | Class::EndOfData => None,
                        Class::ReverseClient => Some(Class::Client),
                        c => Some(c),
                    };
                    let nested = super::parse(items, implicit);
                    self.list(&nested, class).await
                }
                None => {
                    crate::warn!("unknown smtpd restriction: \"{n}\"");
                    self.server_error()
                }
            },
        }
    }

    fn non_fqdn(&mut self, addr: &str, class: Class) -> Status {
        let d = domain_of(addr);
        if d.starts_with('[') {
            return Status::Dunno;
        }
        if d.is_empty() || !valid_hostname(d) || !d.trim_end_matches('.').contains('.') {
            return self.reject(reply(
                self.policy.codes.non_fqdn,
                "4.5.2",
                format!(
                    "<{addr}>: {} rejected: need fully-qualified address",
                    class.text()
                ),
            ));
        }
        Status::Dunno
    }

    async fn sender_login(&mut self, kind: LoginCheck) -> Status {
        let sender = match self.f.sender {
            Some(s) if !s.is_empty() => s,
            _ => return Status::Dunno,
        };
        if self.owners.is_none() {
            match self.lk.sender_owners(sender).await {
                Ok(o) => self.owners = Some(o),
                Err(e) => {
                    crate::warn!("{e}");
                    return self.lookup_error(sender);
                }
            }
        }
        let owners = self.owners.clone().flatten();
        let text = format!("<{sender}>: Sender address rejected");
        match self.f.login {
            Some(user)
                if kind != LoginCheck::Unauthenticated
                    && !owners.as_ref().is_some_and(|o| o.iter().any(|x| x == user)) =>
            {
                self.reject(reply(
                    553,
                    "5.7.1",
                    format!("{text}: not owned by user {user}"),
                ))
            }
            None if kind != LoginCheck::Authenticated && owners.is_some() => {
                self.reject(reply(553, "5.7.1", format!("{text}: not logged in")))
            }
            _ => Status::Dunno,
        }
    }

    /// check_*_access: the lookup keys of `of`, then the table's answer.
    async fn access_check(&mut self, of: Class, map: &str) -> Status {
        let f = self.f;
        let p = self.policy;
        let (subject, lists): (String, Vec<Vec<String>>) = match of {
            Class::Client => (
                f.namaddr.to_string(),
                vec![keys::domain(f.name, p.parent_style), keys::address(&f.ip)],
            ),
            Class::ReverseClient => (
                format!("{}[{}]", f.reverse_name, f.ip),
                vec![
                    keys::domain(f.reverse_name, p.parent_style),
                    keys::address(&f.ip),
                ],
            ),
            Class::Helo => match f.helo {
                Some(h) if !h.is_empty() => (h.to_string(), vec![keys::domain(h, p.parent_style)]),
                _ => return Status::Dunno,
            },
            Class::Sender => match f.sender {
                Some(s) => (
                    s.to_string(),
                    vec![keys::mail(
                        s,
                        &p.recipient_delimiter,
                        p.parent_style,
                        &p.null_sender_key,
                    )],
                ),
                None => return Status::Dunno,
            },
            Class::Recipient => match f.rcpt {
                Some(r) if !r.is_empty() => (
                    r.to_string(),
                    vec![keys::mail(r, &p.recipient_delimiter, p.parent_style, "")],
                ),
                _ => return Status::Dunno,
            },
            Class::Data | Class::EndOfData | Class::Ccert => return Status::Dunno,
        };
        for keys in lists {
            match self.lk.access(map, keys).await {
                Ok(Some((_, value))) => return self.table_result(map, &value, &subject, of).await,
                Ok(None) => {}
                Err(e) => {
                    crate::warn!("{map}: {e}");
                    return self.lookup_error(&subject);
                }
            }
        }
        Status::Dunno
    }

    fn finish(&mut self, s: Status) -> Outcome {
        match s {
            Status::Reject(r) => Outcome::Reject(r),
            Status::Ok | Status::Dunno => Outcome::Accept,
        }
    }

    fn reset(&mut self) {
        self.warn_if_reject = false;
        self.defer_if_reject = None;
        self.depth = 0;
    }

    async fn stage(&mut self, list: &'a [R], class: Class) -> Status {
        self.reset();
        if list.is_empty() {
            return Status::Dunno;
        }
        self.list(list, class).await
    }

    /// The client list (at connect without smtpd_delay_reject).
    pub async fn client(&mut self, memo: &mut Memo) -> Outcome {
        self.defer_if_permit = None;
        let s = self.stage(&self.policy.client, Class::Client).await;
        memo.client = self.defer_if_permit.clone();
        self.finish(s)
    }

    /// The HELO list.
    pub async fn helo(&mut self, memo: &mut Memo) -> Outcome {
        self.defer_if_permit = memo.client.clone();
        let s = if self.f.helo.is_some() {
            self.stage(&self.policy.helo, Class::Helo).await
        } else {
            Status::Dunno
        };
        memo.helo = self.defer_if_permit.clone();
        self.finish(s)
    }

    /// The sender list, then smtpd_reject_unlisted_sender.
    pub async fn mail(&mut self, memo: &mut Memo) -> Outcome {
        self.defer_if_permit = memo.helo.clone();
        let mut s = self.stage(&self.policy.sender, Class::Sender).await;
        memo.sender = self.defer_if_permit.clone();
        if self.policy.reject_unlisted_sender
            && !matches!(s, Status::Reject(_))
            && self.effects.discard.is_none()
            && let Some(sender) = self.f.sender.filter(|s| !s.is_empty())
        {
            s = self.unlisted(sender, Class::Sender).await;
        }
        self.finish(s)
    }

    /// RCPT: (with smtpd_delay_reject) the client, HELO and sender lists,
    /// then the relay and recipient lists, a pending defer_if_permit, and
    /// smtpd_reject_unlisted_recipient.
    pub async fn rcpt(&mut self, memo: &mut Memo) -> Outcome {
        if self.policy.delay_reject {
            for step in 0..3 {
                let o = match step {
                    0 => self.client(memo).await,
                    1 => self.helo(memo).await,
                    _ => self.mail(memo).await,
                };
                if o != Outcome::Accept {
                    return o;
                }
            }
        }
        self.recipient_lists(memo).await
    }

    /// Local submission (pickup): the sender list, then the recipient
    /// lists, with the local user as an authenticated client.
    pub async fn local_submission(&mut self, memo: &mut Memo) -> Outcome {
        let o = self.mail(memo).await;
        if o != Outcome::Accept {
            return o;
        }
        self.recipient_lists(memo).await
    }

    async fn recipient_lists(&mut self, memo: &mut Memo) -> Outcome {
        self.defer_if_permit = memo.sender.clone();
        let mut s = self.stage(&self.policy.relay, Class::Recipient).await;
        if !matches!(s, Status::Reject(_)) {
            s = self.stage(&self.policy.recipient, Class::Recipient).await;
        }
        if !matches!(s, Status::Reject(_))
            && let Some(d) = self.defer_if_permit.take()
        {
            self.warn_if_reject = false;
            s = self.reject(d);
        }
        if self.policy.reject_unlisted_recipient
            && !matches!(s, Status::Reject(_))
            && !self.rcpt_checked
            && self.effects.discard.is_none()
            && let Some(rcpt) = self.f.rcpt.filter(|r| !r.is_empty())
        {
            s = self.unlisted(rcpt, Class::Recipient).await;
        }
        self.finish(s)
    }

    /// DATA (smtpd_data_restrictions).
    pub async fn data(&mut self) -> Outcome {
        self.defer_if_permit = None;
        let s = self.stage(&self.policy.data, Class::Data).await;
        self.finish(s)
    }

    /// End of data (smtpd_end_of_data_restrictions).
    pub async fn end_of_data(&mut self) -> Outcome {
        self.defer_if_permit = None;
        self.eod = true;
        let s = self.stage(&self.policy.end_of_data, Class::EndOfData).await;
        self.finish(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_and_names() {
        assert!(valid_hostname("mail.example.com"));
        assert!(!valid_hostname("1.2.3.4"));
        assert!(!valid_hostname("bad..name"));
        assert!(!valid_hostname("-x.example"));
        assert!(address_literal("[192.0.2.1]"));
        assert!(address_literal("[IPv6:2001:db8::1]"));
    }
}
