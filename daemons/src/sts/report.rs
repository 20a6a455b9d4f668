//! TLS-RPT (RFC 8460) in the sts role: the day's counts per recipient
//! domain and policy, kept in the state store (namespace `tls-rpt`, so a
//! restart loses none), and the daily aggregate reports for the days that
//! ended, sent to the `rua` addresses of the domain's `_smtp._tls` record:
//! `mailto:` as mail (through cleanup, from the null sender), `https:` by
//! POST (port 443 only, the role's one port). A day's counts are dropped
//! once its report went out, or could not be sent anywhere.
//!
//! The days are UTC days, by this role's clock plus
//! `smtp_tls_rpt_clock_offset` (a testing aid: the tests date the reports
//! a day ahead). Reports go out when the role runs, which it does once
//! the smtp client delivers to a domain with a policy.
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

use postern_ipc::resolver::{Reply as Dns, Request as Ask};
use postern_ipc::smtpd_cleanup as sc;
use postern_ipc::sts::Count;
use postern_proto::mtasts::{Rua, tlsrpt_record};
use postern_proto::tlsrpt::{Counts, Failure, PolicyId, Report};

use crate::daemon::Switchboard;
use crate::smtp::dest::Dns as _;
use crate::{info, warn};

/// One domain's day: its policies and their counts.
type Day = Vec<(PolicyId, Counts)>;

/// The state store's index of the (day, domain) records it holds.
const INDEX: &str = "index";
/// Most (day, domain) records kept.
const MAX_RECORDS: usize = 1000;

pub struct Settings {
    pub enabled: bool,
    pub organization: String,
    pub contact: String,
    /// This host, as the report's submitter.
    pub submitter: String,
    pub offset: Duration,
}

impl Settings {
    pub fn new(p: &postern_config::Params) -> Settings {
        Settings {
            enabled: p.bool("smtp_tls_rpt_enable").unwrap_or(false),
            organization: p.str("smtp_tls_rpt_organization").to_string(),
            contact: p.str("smtp_tls_rpt_contact").to_string(),
            submitter: p.str("myhostname").to_string(),
            offset: p
                .duration("smtp_tls_rpt_clock_offset")
                .unwrap_or(Duration::ZERO),
        }
    }
}

pub struct Reports {
    pub s: Settings,
    store: crate::cache::client::Client,
    sb: Switchboard,
    days: RefCell<BTreeMap<(String, String), Day>>,
    loaded: std::cell::Cell<bool>,
}

/// `YYYY-MM-DD` of a time, UTC.
fn day_of(us: u64) -> String {
    jiff::Timestamp::from_microsecond(us as i64)
        .map(|t| t.strftime("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// The first and last second of a UTC day, since the epoch.
fn bounds(day: &str) -> (i64, i64) {
    let start = day
        .parse::<jiff::civil::Date>()
        .ok()
        .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map_or(0, |z| z.timestamp().as_second());
    (start, start + 86_399)
}

impl Reports {
    pub fn new(s: Settings, sb: Switchboard) -> Reports {
        Reports {
            s,
            store: crate::cache::client::Client::new(sb.clone(), "tls-rpt"),
            sb,
            days: RefCell::default(),
            loaded: std::cell::Cell::new(false),
        }
    }

    fn today(&self) -> String {
        day_of(crate::clock::now_us() + self.s.offset.as_micros() as u64)
    }

    /// The records the state store keeps, once per process.
    async fn load(&self) {
        if self.loaded.replace(true) {
            return;
        }
        let Some((index, _)) = self.store.get(INDEX).await else {
            return;
        };
        let keys: Vec<String> = serde_json::from_slice(&index).unwrap_or_default();
        for k in keys.into_iter().take(MAX_RECORDS) {
            let Some((day, domain)) = k.split_once('|') else {
                continue;
            };
            if let Some((v, _)) = self.store.get(&k).await
                && let Ok(d) = serde_json::from_slice::<Day>(&v)
            {
                self.days
                    .borrow_mut()
                    .insert((day.to_string(), domain.to_string()), d);
            }
        }
    }

    /// Writes one record (its failure details dropped if it would not fit
    /// the store's values) and the index.
    async fn save(&self, day: &str, domain: &str) {
        let key = format!("{day}|{domain}");
        let value = {
            let days = self.days.borrow();
            let Some(d) = days.get(&(day.to_string(), domain.to_string())) else {
                return;
            };
            let mut v = serde_json::to_vec(d).unwrap_or_default();
            if v.len() > postern_ipc::cache::MAX_VALUE {
                let lean: Day = d
                    .iter()
                    .map(|(p, c)| {
                        let mut c = c.clone();
                        c.details.clear();
                        (p.clone(), c)
                    })
                    .collect();
                v = serde_json::to_vec(&lean).unwrap_or_default();
            }
            v
        };
        if value.len() <= postern_ipc::cache::MAX_VALUE {
            self.store
                .put(&key, value, Duration::from_secs(4 * 86_400))
                .await;
        }
        self.save_index().await;
    }

    async fn save_index(&self) {
        let keys: Vec<String> = self
            .days
            .borrow()
            .keys()
            .map(|(d, n)| format!("{d}|{n}"))
            .collect();
        let v = serde_json::to_vec(&keys).unwrap_or_default();
        if v.len() <= postern_ipc::cache::MAX_VALUE {
            self.store
                .put(INDEX, v, Duration::from_secs(8 * 86_400))
                .await;
        }
    }

    /// Counts one session (smtp's report of it).
    pub async fn count(&self, c: Count) {
        if !self.s.enabled {
            return;
        }
        self.load().await;
        let day = self.today();
        let policy = PolicyId {
            kind: c.kind.clone(),
            strings: c.strings.clone(),
            domain: c.domain.to_ascii_lowercase(),
            mx: c.mx.clone(),
        };
        {
            let mut days = self.days.borrow_mut();
            let key = (day.clone(), policy.domain.clone());
            if !days.contains_key(&key) && days.len() >= MAX_RECORDS {
                warn!(
                    "TLS-RPT: {MAX_RECORDS} domain-days counted already; {} not counted",
                    policy.domain
                );
                return;
            }
            let d = days.entry(key).or_default();
            let i = match d.iter().position(|(p, _)| *p == policy) {
                Some(i) => i,
                None => {
                    d.push((policy.clone(), Counts::default()));
                    d.len() - 1
                }
            };
            let failure = Failure {
                result_type: c.result_type.clone(),
                sending_ip: c.sending_ip.clone(),
                mx_host: c.mx_host.clone(),
                receiving_ip: c.receiving_ip.clone(),
                count: 0,
            };
            d[i].1
                .record(if c.success { Ok(()) } else { Err(&failure) });
        }
        self.save(&day, &policy.domain).await;
    }

    /// Sends the reports of the days before today; `post` sends one to an
    /// https: address.
    pub async fn send_due<F, Fut>(
        &self,
        query: Duration,
        dns: &crate::smtp::ResolverClient,
        post: F,
    ) where
        F: Fn(String, Vec<u8>) -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        if !self.s.enabled {
            return;
        }
        self.load().await;
        let today = self.today();
        let due: Vec<(String, String)> = self
            .days
            .borrow()
            .keys()
            .filter(|(day, _)| *day < today)
            .cloned()
            .collect();
        for (day, domain) in due {
            let Some(policies) = self
                .days
                .borrow_mut()
                .remove(&(day.clone(), domain.clone()))
            else {
                continue;
            };
            let report = Report {
                organization: self.s.organization.clone(),
                contact: self.s.contact.clone(),
                report_id: format!("{day}.{domain}@{}", self.s.submitter),
                day: day.clone(),
                policies,
            };
            let ruas = match dns.query(Ask::Txt(format!("_smtp._tls.{domain}"))).await {
                Dns::Texts(t) => t
                    .iter()
                    .filter(|t| t.starts_with("v=TLSRPTv1"))
                    .filter_map(|t| tlsrpt_record(t).ok())
                    .next()
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            if ruas.is_empty() {
                info!("TLS-RPT: {domain}: no _smtp._tls record; the report for {day} is dropped");
            }
            let (begin, end) = bounds(&day);
            let file = report.file_name(&self.s.submitter, &domain, begin, end);
            for rua in ruas {
                let (to, r) = match &rua {
                    Rua::Mailto(addr) => (
                        addr.clone(),
                        self.mail(&report, addr, &domain, &file, query).await,
                    ),
                    Rua::Https(url) => (url.clone(), post(url.clone(), report.gzip()).await),
                };
                match r {
                    Ok(()) => info!("TLS-RPT: report for {domain} {day} sent to {to}"),
                    Err(e) => warn!("TLS-RPT: report for {domain} {day} to {to}: {e}"),
                }
            }
            self.store.delete(&format!("{day}|{domain}")).await;
            self.save_index().await;
        }
    }

    async fn mail(
        &self,
        report: &Report,
        to: &str,
        domain: &str,
        file: &str,
        query: Duration,
    ) -> Result<(), String> {
        let from = format!("postmaster@{}", self.s.submitter);
        let msg = report.mail(
            &from,
            to,
            &self.s.submitter,
            domain,
            &crate::clock::rfc5322(),
            &format!("<{}>", report.report_id.replace('@', ".tlsrpt@")),
            file,
        );
        let begin = sc::Begin {
            client: sc::Client {
                name: "localhost".into(),
                proto: "local".into(),
                ..Default::default()
            },
            sender: String::new(),
            ret: 0,
            envid: String::new(),
            smtputf8: false,
            body_8bit: false,
            trace: false,
            remote_headers: false,
            milter_ticket: 0,
            signable: true,
            requiretls: false,
        };
        let rcpt = [sc::Recipient {
            address: to.to_string(),
            orcpt: String::new(),
            notify: postern_proto::queue::notify::NEVER,
        }];
        crate::submit::to_cleanup(&self.sb, query, query, begin, &rcpt, &msg, |_| {})
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
