//! Message authentication of inbound mail (`authentication_checks`): SPF
//! (RFC 7208) of the HELO name and the MAIL FROM domain, every DKIM
//! signature (RFC 6376, 8463), DMARC (RFC 7489; the organizational domain
//! by DMARCbis's DNS tree walk, as mail-auth does it) and the ARC chain
//! (RFC 8617), checked with mail-auth; the verdict written as one
//! `Authentication-Results:` field (RFC 8601) under `authserv_id`, with a
//! `Received-SPF:` field.
//!
//! Only mail from an SMTP client outside mynetworks and without a login is
//! checked. Every DNS answer comes from the resolver role: the names a
//! check needs are asked there first and handed to mail-auth as its cache,
//! and mail-auth's own resolver has no name server at all, so a name it
//! would ask beyond them fails at once as a temporary error.
//!
//! DNS answers, signatures and headers are hostile: at most
//! `authentication_signature_limit` signatures are checked, each key
//! record is bounded by the resolver edge, and the whole check has
//! `authentication_time_limit`; past it the verdict is `temperror`.
use std::borrow::Borrow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use mail_auth::common::headers::HeaderWriter;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::dmarc::{Dmarc, Policy};
use mail_auth::hickory_resolver::proto::op::ResponseCode;
use mail_auth::spf::Spf;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DmarcResult, DnssecStatus, MX,
    MessageAuthenticator, Parameters, ReceivedSpf, RecordSet, ResolverCache, Txt,
};
use postern_config::Params;
use postern_ipc::resolver::{Reply, Request};
use postern_proto::auth::{self, SpfQuestion, fqdn};

use postern_ipc::smtpd_cleanup::Failure;

use super::{Txn, fail};
use crate::info;
use crate::smtp::ResolverClient;
use crate::smtp::dest::Dns;

/// Which checks run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Checks {
    pub spf: bool,
    pub dkim: bool,
    pub dmarc: bool,
    pub arc: bool,
}

pub struct Settings {
    pub authserv_id: String,
    checks: Checks,
    signature_limit: usize,
    time_limit: Duration,
    /// dmarc_reject_enforce, dmarc_quarantine_enforce.
    reject: bool,
    quarantine: bool,
    /// mail-auth's verifier (its resolver with no name server), made at
    /// the first message and kept.
    auth: std::cell::OnceCell<MessageAuthenticator>,
}

impl Settings {
    /// None when no check is configured.
    pub fn new(p: &Params) -> Option<Settings> {
        let list = p.list("authentication_checks").unwrap_or_default();
        let has = |n: &str| list.iter().any(|c| c.eq_ignore_ascii_case(n));
        let checks = Checks {
            spf: has("spf"),
            dkim: has("dkim"),
            dmarc: has("dmarc"),
            arc: has("arc"),
        };
        if !(checks.spf || checks.dkim || checks.dmarc || checks.arc) {
            return None;
        }
        Some(Settings {
            authserv_id: p.str("authserv_id").to_string(),
            checks,
            signature_limit: p.int("authentication_signature_limit").unwrap_or(10) as usize,
            time_limit: p
                .duration("authentication_time_limit")
                .unwrap_or(Duration::from_secs(10)),
            reject: p.bool("dmarc_reject_enforce").unwrap_or(false),
            quarantine: p.bool("dmarc_quarantine_enforce").unwrap_or(false),
            auth: std::cell::OnceCell::new(),
        })
    }
}

/// What the SMTP session said: the client's address, its HELO name, the
/// envelope sender.
pub struct Envelope<'a> {
    pub ip: IpAddr,
    pub helo: &'a str,
    pub sender: &'a str,
}

/// The fields to put on top, and what DMARC asks to be done.
#[derive(Debug, Default)]
pub struct Verdict {
    /// `Authentication-Results:` (and `Received-SPF:`) with their CRLFs.
    pub fields: Vec<String>,
    /// DMARC failed under p=reject with dmarc_reject_enforce: the domain.
    pub reject: Option<String>,
    /// DMARC failed under p=quarantine with dmarc_quarantine_enforce.
    pub hold: bool,
}

/// A name-keyed cache that answers only what was put in it.
struct Answers<V>(RefCell<HashMap<Box<str>, V>>);

impl<V> Default for Answers<V> {
    fn default() -> Self {
        Answers(RefCell::new(HashMap::new()))
    }
}

impl<V: Clone> ResolverCache<Box<str>, V> for Answers<V> {
    fn get<Q>(&self, name: &Q) -> Option<V>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.borrow().get(name).cloned()
    }

    fn remove<Q>(&self, name: &Q) -> Option<V>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.borrow_mut().remove(name)
    }

    fn insert(&self, key: Box<str>, value: V, _: std::time::Instant) {
        self.0.borrow_mut().insert(key, value);
    }
}

/// The client's names, for SPF's ptr mechanism and %{p} macro.
#[derive(Default)]
struct PtrAnswers(RefCell<HashMap<IpAddr, RecordSet<Box<str>>>>);

impl ResolverCache<IpAddr, RecordSet<Box<str>>> for PtrAnswers {
    fn get<Q>(&self, name: &Q) -> Option<RecordSet<Box<str>>>
    where
        IpAddr: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.borrow().get(name).cloned()
    }

    fn remove<Q>(&self, name: &Q) -> Option<RecordSet<Box<str>>>
    where
        IpAddr: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.borrow_mut().remove(name)
    }

    fn insert(&self, key: IpAddr, value: RecordSet<Box<str>>, _: std::time::Instant) {
        self.0.borrow_mut().insert(key, value);
    }
}

/// Everything the checks may ask, filled before they run.
#[derive(Default)]
struct Prefetched {
    txt: Answers<Txt>,
    mx: Answers<RecordSet<MX>>,
    v4: Answers<RecordSet<Ipv4Addr>>,
    v6: Answers<RecordSet<Ipv6Addr>>,
    ptr: PtrAnswers,
}

/// mail-auth's resolver: no name server, no TLS roots. A question the
/// prefetch did not answer fails at once.
fn no_dns() -> Result<MessageAuthenticator, String> {
    use mail_auth::hickory_resolver::TokioResolver;
    use mail_auth::hickory_resolver::config::ResolverConfig;
    use mail_auth::hickory_resolver::net::runtime::TokioRuntimeProvider;
    let r = TokioResolver::builder_with_config(
        ResolverConfig::from_parts(None, vec![], vec![]),
        TokioRuntimeProvider::default(),
    )
    .with_tls_config(crate::resolver::no_tls()?)
    .build()
    .map_err(|e| e.to_string())?;
    Ok(MessageAuthenticator(r))
}

/// A TXT answer as mail-auth caches it: the first record that parses as
/// `T`, or the DNS outcome as its error.
async fn txt<T>(dns: &ResolverClient, name: &str) -> Txt
where
    T: TxtRecordParser + Into<Txt>,
{
    use mail_auth::{DnsError, Error};
    match dns.query(Request::Txt(name.to_string())).await {
        Reply::Texts(records) => {
            let mut out = Txt::Error(Error::Dns(DnsError::InvalidRecordType));
            for r in &records {
                match T::parse(r.as_bytes()) {
                    Ok(v) => return v.into(),
                    Err(e) => out = Txt::Error(e),
                }
            }
            out
        }
        Reply::NotFound => Txt::Error(Error::Dns(DnsError::RecordNotFound(ResponseCode::NXDomain))),
        Reply::Tempfail(e) => Txt::Error(Error::Dns(DnsError::Resolver(e))),
        _ => Txt::Error(Error::Dns(DnsError::InvalidRecordType)),
    }
}

/// The verdict on `message`, within authentication_time_limit (past it,
/// or on a local error, every method configured says `temperror`).
pub async fn verify(
    s: &Settings,
    dns: &ResolverClient,
    env: &Envelope<'_>,
    message: &[u8],
) -> Verdict {
    let why = match tokio::time::timeout(s.time_limit, check(s, dns, env, message)).await {
        Ok(Ok(v)) => return v,
        Ok(Err(e)) => {
            crate::warn!("message authentication: {e}");
            "local error"
        }
        Err(_) => "time limit exceeded",
    };
    let c = s.checks;
    let mut field = format!("Authentication-Results: {}", s.authserv_id);
    for (on, name) in [
        (c.spf, "spf"),
        (c.dkim, "dkim"),
        (c.dmarc, "dmarc"),
        (c.arc, "arc"),
    ] {
        if on {
            field.push_str(&format!(";\r\n\t{name}=temperror ({why})"));
        }
    }
    field.push_str("\r\n");
    Verdict {
        fields: vec![field],
        ..Verdict::default()
    }
}

/// At most this many DNS questions for one message's SPF walk (RFC 7208
/// allows 10 mechanisms that ask, each MX one with up to 10 names).
const SPF_QUESTIONS: usize = 40;

impl Prefetched {
    fn now() -> std::time::Instant {
        std::time::Instant::now()
    }

    /// TXT for NAME as type T, asked once.
    async fn txt<T: TxtRecordParser + Into<Txt>>(&self, dns: &ResolverClient, name: &str) -> Txt {
        let key = fqdn(name);
        if let Some(v) = self.txt.get::<str>(&key) {
            return v;
        }
        let v = txt::<T>(dns, &key).await;
        self.txt.insert(key.into(), v.clone(), Self::now());
        v
    }

    /// The addresses of NAME in the client's address family. A temporary
    /// failure is left out of the cache: mail-auth then fails the lookup
    /// itself, as a temporary error.
    async fn addresses(&self, dns: &ResolverClient, name: &str, v6: bool) {
        let key = fqdn(name);
        let known = if v6 {
            self.v6.get::<str>(&key).is_some()
        } else {
            self.v4.get::<str>(&key).is_some()
        };
        if known {
            return;
        }
        let req = if v6 {
            Request::Addresses(key.clone())
        } else {
            Request::A(key.clone())
        };
        let list = match dns.query(req).await {
            Reply::Addresses(l) => l,
            Reply::NotFound | Reply::NullMx => Vec::new(),
            _ => return,
        };
        if v6 {
            let l: Vec<Ipv6Addr> = list
                .iter()
                .filter_map(|a| match a {
                    IpAddr::V6(a) => Some(*a),
                    IpAddr::V4(_) => None,
                })
                .collect();
            self.v6.insert(key.into(), set(l), Self::now());
        } else {
            let l: Vec<Ipv4Addr> = list
                .iter()
                .filter_map(|a| match a {
                    IpAddr::V4(a) => Some(*a),
                    IpAddr::V6(_) => None,
                })
                .collect();
            self.v4.insert(key.into(), set(l), Self::now());
        }
    }

    /// MX of NAME, grouped by preference as mail-auth groups them; the
    /// exchanges' names.
    async fn mx(&self, dns: &ResolverClient, name: &str) -> Vec<String> {
        let key = fqdn(name);
        let list = match dns.query(Request::Mx(key.clone())).await {
            Reply::Mx(l) => l,
            Reply::NotFound | Reply::NullMx => Vec::new(),
            _ => return Vec::new(),
        };
        let mut groups: Vec<(u16, Vec<Box<str>>)> = Vec::new();
        for (pref, host) in &list {
            let h: Box<str> = fqdn(host).into();
            match groups.iter_mut().find(|g| g.0 == *pref) {
                Some(g) => g.1.push(h),
                None => groups.push((*pref, vec![h])),
            }
        }
        groups.sort_unstable_by_key(|g| g.0);
        let names = groups
            .iter()
            .flat_map(|g| g.1.iter().map(|h| h.to_string()))
            .collect();
        let rrset: Arc<[MX]> = groups
            .into_iter()
            .map(|(preference, exchanges)| MX {
                preference,
                exchanges: exchanges.into_boxed_slice(),
            })
            .collect();
        self.mx.insert(
            key.into(),
            RecordSet {
                rrset,
                dnssec_status: DnssecStatus::Indeterminate,
            },
            Self::now(),
        );
        names
    }

    /// Walks the SPF records DOMAIN's check will read, as mail-auth's
    /// evaluation reads them (`proto::auth::spf_questions`), and asks each
    /// name they lead to. Bounded by [`SPF_QUESTIONS`].
    async fn spf(&self, dns: &ResolverClient, env: &Envelope<'_>, domain: &str, mail_from: bool) {
        let sender = if mail_from { env.sender } else { "" };
        let mut vars = auth::spf_variables(env.ip, sender, domain, env.helo);
        let v6 = env.ip.is_ipv6();
        let mut budget = SPF_QUESTIONS;
        let mut todo = vec![domain.to_string()];
        let mut seen: Vec<String> = Vec::new();
        while let Some(d) = todo.pop() {
            if budget == 0 || seen.contains(&d) {
                continue;
            }
            seen.push(d.clone());
            budget -= 1;
            let Txt::Spf(spf) = self.txt::<Spf>(dns, &d).await else {
                continue;
            };
            vars.set_domain(d.as_bytes().to_vec());
            let mut next = Vec::new();
            for q in auth::spf_questions(&spf, &vars, &d) {
                if budget == 0 {
                    break;
                }
                budget -= 1;
                match q {
                    SpfQuestion::Record(n) => next.push(n),
                    SpfQuestion::Addresses(n) => self.addresses(dns, &n, v6).await,
                    SpfQuestion::A(n) => self.addresses(dns, &n, false).await,
                    SpfQuestion::Mx(n) => {
                        for host in self.mx(dns, &n).await.into_iter().take(10) {
                            if budget == 0 {
                                break;
                            }
                            budget -= 1;
                            self.addresses(dns, &host, v6).await;
                        }
                    }
                    SpfQuestion::Ptr => self.ptr(dns, env.ip, v6).await,
                }
            }
            // Depth first, in the record's order, as the evaluation goes.
            todo.extend(next.into_iter().rev());
        }
    }

    /// The client's names (PTR), each with its addresses for the
    /// forward check.
    async fn ptr(&self, dns: &ResolverClient, ip: IpAddr, v6: bool) {
        if self.ptr.get(&ip).is_some() {
            return;
        }
        let names = match dns.query(Request::Ptr(ip.to_string())).await {
            Reply::Names(n) => n,
            Reply::NotFound => Vec::new(),
            _ => return,
        };
        for n in names.iter().take(10) {
            self.addresses(dns, n, v6).await;
        }
        let rrset: Arc<[Box<str>]> = names.iter().map(|n| Box::<str>::from(fqdn(n))).collect();
        self.ptr.insert(
            ip,
            RecordSet {
                rrset,
                dnssec_status: DnssecStatus::Indeterminate,
            },
            Self::now(),
        );
    }
}

fn set<T>(l: Vec<T>) -> RecordSet<T> {
    RecordSet {
        rrset: l.into(),
        dnssec_status: DnssecStatus::Indeterminate,
    }
}

async fn check(
    s: &Settings,
    dns: &ResolverClient,
    env: &Envelope<'_>,
    message: &[u8],
) -> Result<Verdict, String> {
    let c = s.checks;
    let Some(mut msg) = AuthenticatedMessage::parse(message) else {
        let mut field = format!("Authentication-Results: {}", s.authserv_id);
        for (on, name) in [(c.dkim, "dkim"), (c.dmarc, "dmarc"), (c.arc, "arc")] {
            if on {
                field.push_str(&format!(";\r\n\t{name}=permerror (unparsable message)"));
            }
        }
        field.push_str("\r\n");
        return Ok(Verdict {
            fields: vec![field],
            ..Verdict::default()
        });
    };
    let total = msg.dkim_headers.len();
    msg.dkim_headers.truncate(s.signature_limit);
    msg.ams_headers.truncate(s.signature_limit);
    msg.as_headers.truncate(s.signature_limit);
    if total > s.signature_limit {
        crate::info!(
            "message authentication: {total} DKIM signatures, the first {} checked",
            s.signature_limit
        );
    }
    let answers = Prefetched::default();
    // The keys of every signature and seal.
    let keys = auth::key_names(&msg, s.signature_limit, c.dkim || c.dmarc, c.arc);
    for k in &keys {
        answers.txt::<DomainKey>(dns, k).await;
    }
    let helo = env.helo;
    let mail_domain = env
        .sender
        .rsplit_once('@')
        .map_or(helo, |(_, d)| d)
        .to_string();
    if c.spf || c.dmarc {
        if !helo.is_empty() {
            answers.spf(dns, env, helo, false).await;
        }
        answers.spf(dns, env, &mail_domain, true).await;
    }
    let from_domain = msg
        .from
        .first()
        .and_then(|f| f.rsplit_once('@'))
        .map_or("", |(_, d)| d)
        .to_ascii_lowercase();
    if c.dmarc {
        for n in auth::dmarc_names(&from_domain) {
            answers.txt::<Dmarc>(dns, &n).await;
        }
        // RFC 8020: whether the author domain exists (np=).
        answers.addresses(dns, &from_domain, false).await;
    }
    let auth = match s.auth.get() {
        Some(a) => a,
        None => {
            let _ = s.auth.set(no_dns()?);
            s.auth.get().ok_or("no verifier")?
        }
    };
    macro_rules! params {
        ($p:expr) => {
            Parameters::new($p)
                .with_txt_cache(&answers.txt)
                .with_mx_cache(&answers.mx)
                .with_ipv4_cache(&answers.v4)
                .with_ipv6_cache(&answers.v6)
                .with_ptr_cache(&answers.ptr)
        };
    }
    let hostname = s.authserv_id.as_str();
    let mut ar = AuthenticationResults::new(hostname);
    // Results mail-auth has no builder for ("dkim=none").
    let mut extra = String::new();
    let mut fields = Vec::new();
    let mut verdict = Verdict::default();
    let spf_mail = if c.spf || c.dmarc {
        let spf_helo = if helo.is_empty() {
            None
        } else {
            Some(
                auth.verify_spf(params!(SpfParameters::verify_ehlo(env.ip, helo, hostname)))
                    .await,
            )
        };
        let spf_mail = auth
            .verify_spf(params!(SpfParameters::verify_mail_from(
                env.ip, helo, hostname, env.sender
            )))
            .await;
        if c.spf {
            if let Some(h) = &spf_helo {
                ar = ar.with_spf_ehlo_result(h, env.ip, helo);
            }
            ar = ar.with_spf_mailfrom_result(&spf_mail, env.ip, env.sender, helo);
            fields
                .push(ReceivedSpf::new(&spf_mail, env.ip, helo, env.sender, hostname).to_header());
        }
        Some(spf_mail)
    } else {
        None
    };
    let dkim = if c.dkim || c.dmarc {
        auth.verify_dkim(params!(&msg)).await
    } else {
        Vec::new()
    };
    if c.dkim {
        if dkim.is_empty() {
            extra.push_str(";\r\n\tdkim=none");
        } else {
            ar = ar.with_dkim_results(&dkim, &from_domain);
        }
    }
    if c.dmarc
        && let Some(spf_mail) = &spf_mail
    {
        let dmarc = auth
            .verify_dmarc(params!(DmarcParameters {
                message: &msg,
                dkim_output: &dkim,
                dkim2_output: None,
                rfc5321_mail_from_domain: &mail_domain,
                spf_output: spf_mail,
            }))
            .await;
        ar = ar.with_dmarc_result(&dmarc);
        // Neither identifier passed aligned, and no DNS error left it open.
        if matches!(dmarc.result(), DmarcResult::Fail(_)) {
            match dmarc.policy() {
                Policy::Reject if s.reject => verdict.reject = Some(dmarc.domain().to_string()),
                Policy::Reject | Policy::Quarantine if s.quarantine => verdict.hold = true,
                _ => {}
            }
        }
    }
    if c.arc {
        let arc = auth.verify_arc(params!(&msg)).await;
        ar = ar.with_arc_result(&arc, env.ip);
    }
    let header = ar.to_header();
    let header = header.trim_end_matches("\r\n");
    let header = header.strip_suffix("; none").unwrap_or(header);
    fields.insert(0, format!("{header}{extra}\r\n"));
    verdict.fields = fields;
    Ok(verdict)
}

/// The checks in the transaction: before the Milters the verdict is
/// made and forgeries removed, after them the verdict goes on top.
impl Txn {
    /// Checks the message (authres.rs), before the Milters: every
    /// `Authentication-Results:` field that claims our authserv-id is
    /// removed (RFC 8601 5: a forgery from outside), and DMARC's reject or
    /// quarantine applied. The verdict's fields are returned, to be put on
    /// top after the Milters ([`Txn::put_on_top`]), so that a Milter such as
    /// opendkim, which removes fields claiming its own authserv-id, leaves
    /// ours, and its own stays beside it.
    pub(super) async fn authenticate(
        &mut self,
        a: &Settings,
        dns: &ResolverClient,
    ) -> Result<Vec<String>, Failure> {
        let mut m = self.read_back().map_err(|e| self.io_error(e))?;
        let c = &self.begin.client;
        let Ok(ip) = c.addr.parse() else {
            return Ok(Vec::new());
        };
        let env = Envelope {
            ip,
            helo: &c.helo,
            sender: &self.begin.sender,
        };
        let verdict = verify(a, dns, &env, &m.bytes()).await;
        if let Some(domain) = &verdict.reject {
            info!("{}: DMARC policy of {domain}: reject", self.id);
            return Err(fail(
                550,
                "5.7.1",
                &format!("rejected by DMARC policy for {domain}"),
            ));
        }
        if verdict.hold {
            info!("{}: DMARC policy: quarantine (held)", self.id);
            self.effects.hold = true;
        }
        let ours = |f: &postern_proto::header::Field| {
            f.is("Authentication-Results")
                && f.value()
                    .split(';')
                    .next()
                    .map(|id| id.split_whitespace().next().unwrap_or(""))
                    .is_some_and(|id| id.eq_ignore_ascii_case(&a.authserv_id))
        };
        let before = m.fields.len();
        m.fields.retain(|f| !ours(f));
        if m.fields.len() != before {
            info!(
                "{}: removed {} Authentication-Results header(s) claiming {}",
                self.id,
                before - m.fields.len(),
                a.authserv_id
            );
            self.rewrite(&m).map_err(|e| self.io_error(e))?;
        }
        Ok(verdict.fields)
    }

    /// Puts header fields on top of the message (the authentication
    /// verdict), writing the queue file again.
    pub(super) fn put_on_top(&mut self, fields: Vec<String>) -> Result<(), Failure> {
        if fields.is_empty() {
            return Ok(());
        }
        let mut m = self.read_back().map_err(|e| self.io_error(e))?;
        for (i, f) in fields.into_iter().enumerate() {
            let name = f.split(':').next().unwrap_or_default().to_string();
            m.fields.insert(
                i,
                postern_proto::header::Field {
                    name,
                    raw: f.into_bytes(),
                },
            );
        }
        self.rewrite(&m).map_err(|e| self.io_error(e))
    }
}
