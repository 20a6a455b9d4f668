//! postscreen's settings, read once from its configuration slice (and a
//! postscreen service's -o overrides). A setting that cannot work stops
//! the role at start, before the jail.
use std::time::Duration;

use postern_config::Params;
use postern_config::postscreen::Site;
use postern_proto::screen::{self, Action};

use crate::access::Cidr;
use crate::tablecache::TableRef;

/// One item of postscreen_access_list.
pub enum Acl {
    PermitMynetworks,
    Table(TableRef),
}

pub struct Settings {
    pub engine: screen::Config,
    /// The "220 " line of the engine after the greeting (smtpd_banner).
    pub smtpd_banner: String,
    /// The "220-" teaser before it; empty: none.
    pub greet_banner: String,
    pub greet_wait: Duration,
    pub greet_action: Action,
    pub greet_ttl: Duration,
    pub sites: Vec<Site>,
    pub dnsbl_threshold: i32,
    pub dnsbl_allowlist_threshold: i32,
    pub dnsbl_action: Action,
    pub dnsbl_min_ttl: Duration,
    pub dnsbl_max_ttl: Duration,
    pub dnsbl_timeout: Duration,
    pub access: Vec<Acl>,
    pub mynetworks: Vec<Cidr>,
    pub denylist_action: Action,
    pub pipelining: bool,
    pub non_smtp: bool,
    pub bare_newline: bool,
    pub pipelining_ttl: Duration,
    pub non_smtp_ttl: Duration,
    pub bare_newline_ttl: Duration,
    /// How long a record outlives its last test (postscreen_cache_retention_time).
    pub retention: Duration,
    /// postscreen_client_connection_count_limit; 0: none.
    pub connection_limit: u32,
    pub ipv6_prefix: u8,
    pub command_time_limit: Duration,
    pub pre_queue_limit: usize,
    pub post_queue_limit: u32,
    /// postscreen_upstream_proxy_protocol = haproxy: the header's deadline.
    pub proxy: Option<Duration>,
    /// The smtpd pass service (smtpd_service_name).
    pub pass_service: String,
}

impl Settings {
    pub fn new(p: &Params) -> Result<Settings, String> {
        let e = |x: postern_config::ParamError| x.to_string();
        let action = |n: &str| -> Result<Action, String> {
            Action::parse(p.str(n)).ok_or_else(|| format!("{n}: bad action \"{}\"", p.str(n)))
        };
        let int = |n: &str| -> Result<i64, String> { p.int(n).map_err(e) };
        let dur = |n: &str| -> Result<Duration, String> { p.duration(n).map_err(e) };
        let hostname = p.str("myhostname").to_string();
        let sites =
            postern_config::postscreen::sites(&p.list("postscreen_dnsbl_sites").map_err(e)?)
                .map_err(|m| format!("postscreen_dnsbl_sites: {m}"))?;
        let access = p
            .list("postscreen_access_list")
            .map_err(e)?
            .into_iter()
            .map(|item| {
                if item == "permit_mynetworks" {
                    Ok(Acl::PermitMynetworks)
                } else {
                    crate::tables::parse(&item)
                        .map(|t| Acl::Table(Ok(t)))
                        .map_err(|m| format!("postscreen_access_list: {item}: {m}"))
                }
            })
            .collect::<Result<Vec<_>, String>>()?;
        let mynetworks = p
            .list("mynetworks")
            .map_err(e)?
            .iter()
            .map(|s| Cidr::parse(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|m| format!("mynetworks: {m}"))?;
        let min_ttl = dur("postscreen_dnsbl_min_ttl")?;
        let max_ttl = dur("postscreen_dnsbl_max_ttl")?.max(min_ttl);
        Ok(Settings {
            engine: screen::Config {
                hostname: hostname.clone(),
                pipelining: action("postscreen_pipelining_action")?,
                non_smtp: action("postscreen_non_smtp_command_action")?,
                bare_newline: action("postscreen_bare_newline_action")?,
                line_limit: usize::try_from(int("line_length_limit")?).unwrap_or(2048),
                command_count_limit: u32::try_from(int("postscreen_command_count_limit")?)
                    .unwrap_or(20),
                helo_required: p.bool("postscreen_helo_required").map_err(e)?,
                disable_vrfy: p.bool("postscreen_disable_vrfy_command").map_err(e)?,
                forbidden: p
                    .list("postscreen_forbidden_commands")
                    .map_err(e)?
                    .into_iter()
                    .map(|w| w.to_ascii_uppercase())
                    .collect(),
                size_limit: p.size("message_size_limit").map_err(e)?,
                soft_bounce: p.bool("soft_bounce").map_err(e)?,
            },
            smtpd_banner: p.str("smtpd_banner").to_string(),
            greet_banner: p.str("postscreen_greet_banner").to_string(),
            greet_wait: dur("postscreen_greet_wait")?,
            greet_action: action("postscreen_greet_action")?,
            greet_ttl: dur("postscreen_greet_ttl")?,
            sites,
            dnsbl_threshold: i32::try_from(int("postscreen_dnsbl_threshold")?).unwrap_or(1),
            dnsbl_allowlist_threshold: i32::try_from(int("postscreen_dnsbl_allowlist_threshold")?)
                .unwrap_or(0),
            dnsbl_action: action("postscreen_dnsbl_action")?,
            dnsbl_min_ttl: min_ttl,
            dnsbl_max_ttl: max_ttl,
            dnsbl_timeout: dur("postscreen_dnsbl_timeout")?,
            access,
            mynetworks,
            denylist_action: action("postscreen_denylist_action")?,
            pipelining: p.bool("postscreen_pipelining_enable").map_err(e)?,
            non_smtp: p.bool("postscreen_non_smtp_command_enable").map_err(e)?,
            bare_newline: p.bool("postscreen_bare_newline_enable").map_err(e)?,
            pipelining_ttl: dur("postscreen_pipelining_ttl")?,
            non_smtp_ttl: dur("postscreen_non_smtp_command_ttl")?,
            bare_newline_ttl: dur("postscreen_bare_newline_ttl")?,
            retention: dur("postscreen_cache_retention_time")?,
            connection_limit: u32::try_from(int("postscreen_client_connection_count_limit")?)
                .unwrap_or(0),
            ipv6_prefix: u8::try_from(int("smtpd_client_ipv6_prefix_length")?).unwrap_or(84),
            command_time_limit: dur("postscreen_command_time_limit")?,
            pre_queue_limit: usize::try_from(int("postscreen_pre_queue_limit")?).unwrap_or(100),
            post_queue_limit: u32::try_from(int("postscreen_post_queue_limit")?).unwrap_or(100),
            proxy: match p.str("postscreen_upstream_proxy_protocol") {
                "haproxy" => Some(dur("postscreen_upstream_proxy_timeout")?),
                _ => None,
            },
            pass_service: match p.str("smtpd_service_name") {
                "" => "smtpd".into(),
                s => s.to_string(),
            },
        })
    }

    /// The shortest time a test result is kept: how long a client that
    /// failed a test whose action is ignore is let on (Postfix's
    /// psc_min_ttl).
    pub fn min_ttl(&self) -> Duration {
        [
            self.greet_ttl,
            self.dnsbl_min_ttl,
            self.pipelining_ttl,
            self.non_smtp_ttl,
            self.bare_newline_ttl,
        ]
        .into_iter()
        .min()
        .unwrap_or(Duration::from_secs(60))
    }

    /// Whether a deep test is enabled.
    pub fn deep_enabled(&self, t: screen::Test) -> bool {
        match t {
            screen::Test::Pipelining => self.pipelining,
            screen::Test::NonSmtp => self.non_smtp,
            screen::Test::BareNewline => self.bare_newline,
        }
    }

    pub fn deep_ttl(&self, t: screen::Test) -> Duration {
        match t {
            screen::Test::Pipelining => self.pipelining_ttl,
            screen::Test::NonSmtp => self.non_smtp_ttl,
            screen::Test::BareNewline => self.bare_newline_ttl,
        }
    }
}
