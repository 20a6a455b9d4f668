//! TLS-RPT (RFC 8460) aggregate reports, sans-IO: the day's counts per
//! policy as the smtp client records them, the report's JSON (RFC 8460
//! §4.4), gzipped, its file name (§5.1) and the report mail (§5.3). The
//! counting, keeping and sending are the caller's.
use serde::{Deserialize, Serialize};

/// Most failure details kept per policy (the rest are counted, not
/// itemized).
pub const MAX_DETAILS: usize = 32;

/// RFC 8460 §4.3's result types, those Postern can tell apart.
pub const RESULT_TYPES: &[&str] = &[
    "starttls-not-supported",
    "certificate-host-mismatch",
    "certificate-expired",
    "certificate-not-trusted",
    "validation-failure",
    "tlsa-invalid",
    "dnssec-invalid",
    "dane-required",
    "sts-policy-fetch-error",
    "sts-policy-invalid",
    "sts-webpki-invalid",
];

/// The policy a session was held to (§4.4 `policy`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PolicyId {
    /// `sts`, `tlsa` or `no-policy-found`.
    pub kind: String,
    /// The policy as text: an MTA-STS policy's lines, or TLSA records.
    pub strings: Vec<String>,
    /// The recipient domain.
    pub domain: String,
    /// MTA-STS: the policy's `mx:` patterns; TLSA: the MX host.
    pub mx: Vec<String>,
}

/// One itemized failure (§4.4 `failure-details`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub result_type: String,
    pub sending_ip: String,
    pub mx_host: String,
    pub receiving_ip: String,
    pub count: u64,
}

/// A policy's counts for one day.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counts {
    pub successes: u64,
    pub failures: u64,
    pub details: Vec<Failure>,
}

impl Counts {
    /// Counts one session: a success, or a failure of `result_type`
    /// between those addresses (itemized up to [`MAX_DETAILS`]).
    pub fn record(&mut self, outcome: Result<(), &Failure>) {
        match outcome {
            Ok(()) => self.successes += 1,
            Err(f) => {
                self.failures += 1;
                let same = |d: &&mut Failure| {
                    d.result_type == f.result_type
                        && d.sending_ip == f.sending_ip
                        && d.mx_host == f.mx_host
                        && d.receiving_ip == f.receiving_ip
                };
                if let Some(d) = self.details.iter_mut().find(same) {
                    d.count += 1;
                } else if self.details.len() < MAX_DETAILS {
                    let mut f = f.clone();
                    f.count = 1;
                    self.details.push(f);
                }
            }
        }
    }
}

/// One day's report for one recipient domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub organization: String,
    pub contact: String,
    pub report_id: String,
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    pub policies: Vec<(PolicyId, Counts)>,
}

impl Report {
    /// The report as RFC 8460 §4.4 writes it.
    pub fn json(&self) -> String {
        let policies: Vec<serde_json::Value> = self
            .policies
            .iter()
            .map(|(p, c)| {
                let mut policy = serde_json::json!({
                    "policy-type": p.kind,
                    "policy-string": p.strings,
                    "policy-domain": p.domain,
                });
                if !p.mx.is_empty() {
                    policy["mx-host"] = serde_json::json!(p.mx);
                }
                let mut entry = serde_json::json!({
                    "policy": policy,
                    "summary": {
                        "total-successful-session-count": c.successes,
                        "total-failure-session-count": c.failures,
                    },
                });
                if !c.details.is_empty() {
                    entry["failure-details"] = c
                        .details
                        .iter()
                        .map(|d| {
                            let mut v = serde_json::json!({
                                "result-type": d.result_type,
                                "receiving-mx-hostname": d.mx_host,
                                "failed-session-count": d.count,
                            });
                            if !d.sending_ip.is_empty() {
                                v["sending-mta-ip"] = serde_json::json!(d.sending_ip);
                            }
                            if !d.receiving_ip.is_empty() {
                                v["receiving-ip"] = serde_json::json!(d.receiving_ip);
                            }
                            v
                        })
                        .collect();
                }
                entry
            })
            .collect();
        serde_json::json!({
            "organization-name": self.organization,
            "date-range": {
                "start-datetime": format!("{}T00:00:00Z", self.day),
                "end-datetime": format!("{}T23:59:59Z", self.day),
            },
            "contact-info": self.contact,
            "report-id": self.report_id,
            "policies": policies,
        })
        .to_string()
    }

    /// The JSON, gzipped (`application/tlsrpt+gzip`).
    pub fn gzip(&self) -> Vec<u8> {
        use std::io::Write;
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        // Writing to a Vec cannot fail.
        let _ = z.write_all(self.json().as_bytes());
        z.finish().unwrap_or_default()
    }

    /// §5.1: `submitter!policy-domain!begin!end!id.json.gz`, the times in
    /// seconds since the epoch (the caller's clock knows them).
    pub fn file_name(&self, submitter: &str, domain: &str, begin: i64, end: i64) -> String {
        let id: String = self
            .report_id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(32)
            .collect();
        format!("{submitter}!{domain}!{begin}!{end}!{id}.json.gz")
    }

    /// The report mail of §5.3 to `rua` (a `mailto:` address), from
    /// `from`, for `domain`; `date` is the RFC 5322 date, `message_id`
    /// the whole Message-ID value. CRLF line ends.
    #[allow(clippy::too_many_arguments)]
    pub fn mail(
        &self,
        from: &str,
        to: &str,
        submitter: &str,
        domain: &str,
        date: &str,
        message_id: &str,
        file_name: &str,
    ) -> Vec<u8> {
        use base64::Engine;
        let boundary = format!("tlsrpt.{}", self.report_id.replace(['<', '>', '@'], "."));
        let b64 = base64::engine::general_purpose::STANDARD.encode(self.gzip());
        let mut body = String::new();
        for chunk in b64.as_bytes().chunks(76) {
            body.push_str(&String::from_utf8_lossy(chunk));
            body.push_str("\r\n");
        }
        format!(
            "From: {from}\r\nTo: {to}\r\nDate: {date}\r\nMessage-ID: {message_id}\r\n\
             Subject: Report Domain: {domain} Submitter: {submitter} Report-ID: <{id}>\r\n\
             TLS-Report-Domain: {domain}\r\nTLS-Report-Submitter: {submitter}\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: multipart/report; report-type=\"tlsrpt\"; boundary=\"{boundary}\"\r\n\
             \r\nThis is a multipart message in MIME format.\r\n\
             \r\n--{boundary}\r\nContent-Type: text/plain; charset=\"us-ascii\"\r\n\
             Content-Transfer-Encoding: 7bit\r\n\
             \r\nThis is an aggregate TLS report from {submitter}.\r\n\
             \r\n--{boundary}\r\nContent-Type: application/tlsrpt+gzip\r\n\
             Content-Transfer-Encoding: base64\r\n\
             Content-Disposition: attachment; filename=\"{file_name}\"\r\n\
             \r\n{body}\r\n--{boundary}--\r\n",
            id = self.report_id,
        )
        .into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        let sts = PolicyId {
            kind: "sts".into(),
            strings: vec![
                "version: STSv1".into(),
                "mode: enforce".into(),
                "mx: mx.example.com".into(),
                "max_age: 86400".into(),
            ],
            domain: "example.com".into(),
            mx: vec!["mx.example.com".into()],
        };
        let mut c = Counts::default();
        c.record(Ok(()));
        c.record(Ok(()));
        let f = Failure {
            result_type: "certificate-not-trusted".into(),
            sending_ip: "192.0.2.1".into(),
            mx_host: "mx.example.com".into(),
            receiving_ip: "198.51.100.7".into(),
            count: 0,
        };
        c.record(Err(&f));
        c.record(Err(&f));
        Report {
            organization: "Example Appliance".into(),
            contact: "postmaster@sender.example".into(),
            report_id: "2026-12-06.example.com@sender.example".into(),
            day: "2026-12-06".into(),
            policies: vec![(sts, c)],
        }
    }

    #[test]
    fn counts_and_the_json() {
        let r = report();
        let v: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(v["date-range"]["start-datetime"], "2026-12-06T00:00:00Z");
        assert_eq!(v["date-range"]["end-datetime"], "2026-12-06T23:59:59Z");
        let p = &v["policies"][0];
        assert_eq!(p["policy"]["policy-type"], "sts");
        assert_eq!(p["summary"]["total-successful-session-count"], 2);
        assert_eq!(p["summary"]["total-failure-session-count"], 2);
        assert_eq!(p["failure-details"][0]["failed-session-count"], 2);
        assert_eq!(p["failure-details"][0]["receiving-ip"], "198.51.100.7");
        // gzip round trip.
        use std::io::Read;
        let mut out = String::new();
        flate2::read::GzDecoder::new(&r.gzip()[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, r.json());
    }

    #[test]
    fn details_are_capped_but_counted() {
        let mut c = Counts::default();
        for i in 0..(MAX_DETAILS + 10) {
            c.record(Err(&Failure {
                result_type: "validation-failure".into(),
                sending_ip: format!("192.0.2.{i}"),
                mx_host: "mx".into(),
                receiving_ip: String::new(),
                count: 0,
            }));
        }
        assert_eq!(c.failures, (MAX_DETAILS + 10) as u64);
        assert_eq!(c.details.len(), MAX_DETAILS);
    }

    #[test]
    fn the_mail_and_its_file_name() {
        let r = report();
        let name = r.file_name(
            "mx.sender.example",
            "example.com",
            1_796_515_200,
            1_796_601_599,
        );
        assert_eq!(
            name,
            "mx.sender.example!example.com!1796515200!1796601599!20261206examplecomsenderexample.json.gz"
        );
        let m = String::from_utf8(r.mail(
            "postmaster@sender.example",
            "tlsrpt@example.com",
            "mx.sender.example",
            "example.com",
            "Mon, 7 Dec 2026 00:05:00 +0000",
            "<tlsrpt.1@sender.example>",
            &name,
        ))
        .unwrap();
        for want in [
            "TLS-Report-Domain: example.com\r\n",
            "TLS-Report-Submitter: mx.sender.example\r\n",
            "Content-Type: multipart/report; report-type=\"tlsrpt\"",
            "Content-Type: application/tlsrpt+gzip\r\n",
            &format!("filename=\"{name}\""),
            "Subject: Report Domain: example.com Submitter: mx.sender.example Report-ID: <",
        ] {
            assert!(m.contains(want), "{want}\n{m}");
        }
        assert!(m.lines().all(|l| l.len() <= 998));
    }
}
