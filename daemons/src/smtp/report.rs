//! The smtp client's delivery results and their log lines (Postfix's
//! `to=<...>, relay=..., delay=..., delays=..., dsn=..., status=...`), and
//! address-verification probes.
use std::time::{Duration, Instant};

use postern_ipc::deliver::{self, DeliveryResult, Status};

use super::transaction::Outcome;
use super::{Smtp, secs};
use crate::clock::now_us;
use crate::log;

impl Smtp {
    /// An address-verification probe of the request's one recipient.
    pub(super) async fn probe(&self, req: &deliver::Request, start_us: u64) -> deliver::Reply {
        let mut setup = Duration::ZERO;
        let Some(r) = req.recipients.first() else {
            return deliver::Reply {
                results: Vec::new(),
            };
        };
        let plain = super::requiretls::Request::default();
        let mut s = match self.session(&req.nexthop, &mut setup, &plain).await {
            Ok(s) => s,
            Err((status, dsn, text)) => {
                return self.all(req, status, &dsn, &text, "none", start_us, setup);
            }
        };
        let relay = s.relay();
        let features = s.features.clone();
        let t0 = Instant::now();
        let (outcome, reusable) = s.probe(&req.sender, &r.address, &self.s.t).await;
        let remote = s.remote_name.clone();
        if reusable {
            self.put_cached(&req.nexthop, s).await;
        }
        let (status, dsn, text) = match outcome {
            Outcome::Sent(t) => (Status::Sent, "2.1.5".to_string(), t),
            Outcome::Deferred(d, t) => (Status::Deferred, d, t),
            Outcome::Bounced(d, t) => (Status::Bounced, d, t),
        };
        self.log(
            req,
            &r.address,
            &relay,
            &dsn,
            status,
            &text,
            start_us,
            setup,
            t0.elapsed(),
            Some(&features),
        );
        deliver::Reply {
            results: vec![DeliveryResult {
                index: r.index,
                status,
                dsn,
                text,
                relay,
                remote_mta: remote,
            }],
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn log(
        &self,
        req: &deliver::Request,
        to: &str,
        relay: &str,
        dsn: &str,
        status: Status,
        text: &str,
        start_us: u64,
        setup: Duration,
        xfer: Duration,
        tls: Option<&str>,
    ) {
        let word = log::status_word(status, req.is_probe());
        // smtp_log_tls_feature_status: Postfix 3.11's tls= field.
        let tls = match tls {
            Some(t) if self.s.tls_features && !t.is_empty() => format!(", tls={t}"),
            _ => String::new(),
        };
        log::line(&format!(
            "{}: to=<{to}>, relay={relay}, delay={}, delays={}/{}/{}/{}{tls}, dsn={dsn}, status={word} ({text})",
            req.queue_id,
            secs(now_us().saturating_sub(req.arrival_us)),
            secs(req.active_us.saturating_sub(req.arrival_us)),
            secs(start_us.saturating_sub(req.active_us)),
            secs(setup.as_micros() as u64),
            secs(xfer.as_micros() as u64),
        ));
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn all(
        &self,
        req: &deliver::Request,
        status: Status,
        dsn: &str,
        text: &str,
        relay: &str,
        start_us: u64,
        setup: Duration,
    ) -> deliver::Reply {
        let results = req
            .recipients
            .iter()
            .map(|r| {
                self.log(
                    req,
                    &r.address,
                    relay,
                    dsn,
                    status,
                    text,
                    start_us,
                    setup,
                    Duration::ZERO,
                    None,
                );
                DeliveryResult {
                    index: r.index,
                    status,
                    dsn: dsn.into(),
                    text: text.into(),
                    relay: relay.into(),
                    remote_mta: String::new(),
                }
            })
            .collect();
        deliver::Reply { results }
    }
}
