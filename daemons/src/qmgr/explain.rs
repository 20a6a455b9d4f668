//! `postern queue explain ADDRESS|DOMAIN`: how mail for it would be routed
//! now, by the same code a delivery uses: the transport and next hop
//! (route.rs), the hosts and addresses behind the next hop (the smtp
//! client's own MX logic, smtp/dest.rs, through the resolver role), the
//! TLS level, the destination's limits, what is in flight or waiting for
//! it, and the deferred mail for the domain with its next attempt.
use postern_ipc::admin_qmgr::{Explanation, Hop, MAX_HOPS, Reply};
use tokio::sync::mpsc;

use super::admin::{Out, each_listed, entry_of};
use super::*;
use crate::smtp::dest;

impl Qmgr {
    pub(super) fn explain(&self, target: String, reply: mpsc::UnboundedSender<Out>) {
        let address = if target.contains('@') {
            target
        } else {
            format!("postmaster@{target}")
        };
        let domain = address
            .rsplit_once('@')
            .map_or(String::new(), |(_, d)| d.to_ascii_lowercase());
        // What the destinations hold now: (in flight, recipients waiting).
        let dests: HashMap<Dest, (u32, u32)> = self
            .dests
            .iter()
            .map(|(d, q)| {
                let waiting: usize = q.entries.iter().map(|(_, idx)| idx.len()).sum();
                (d.clone(), (q.in_flight as u32, waiting as u32))
            })
            .collect();
        let (s, tables, agents, resolver) = (
            self.s.clone(),
            self.tables.clone(),
            self.agents.clone(),
            self.resolver.clone(),
        );
        tokio::task::spawn_local(async move {
            let mut x = Explanation {
                address: address.clone(),
                ..Explanation::default()
            };
            let route = resolve(&s, &s.route, &tables, "", &address).await;
            let dest: Option<Dest> = match route {
                Route::Local => {
                    x.transport = "local".into();
                    x.tls_level = "none".into();
                    x.tls_why = "local delivery".into();
                    Some((Role::Local, String::new()))
                }
                Route::Smtp(h) => {
                    x.nexthop = h.clone();
                    if let Some(inet) = h.strip_prefix("lmtp:") {
                        x.transport = "lmtp".into();
                        if inet.starts_with("unix:") {
                            x.tls_level = "none".into();
                            x.tls_why = "LMTP over a Unix socket".into();
                        } else {
                            let level = match s.lmtp_tls_level.as_str() {
                                "" => "none",
                                l => l,
                            };
                            let key = inet.strip_prefix("inet:").unwrap_or(inet);
                            (x.tls_level, x.tls_why) = tls_policy(
                                &tables,
                                ("lmtp_tls_policy_maps", &s.lmtp_tls_policy_maps),
                                ("lmtp_tls_security_level", level),
                                vec![key.to_string()],
                            )
                            .await;
                        }
                        if let Some(hp) = inet.strip_prefix("inet:") {
                            hops(
                                &resolver,
                                &format!("[{}]", hp.trim_start_matches('[')),
                                &mut x,
                            )
                            .await;
                        }
                    } else {
                        x.transport = "smtp".into();
                        (x.tls_level, x.tls_why) = tls_policy(
                            &tables,
                            ("smtp_tls_policy_maps", &s.tls_policy_maps),
                            ("smtp_tls_security_level", &s.smtp_tls_level),
                            crate::smtp::policy_keys(&h),
                        )
                        .await;
                        hops(&resolver, &h, &mut x).await;
                    }
                    Some((Role::Smtp, h))
                }
                Route::Error(why) => {
                    x.transport = "error".into();
                    x.outcome = why;
                    None
                }
                Route::Discard => {
                    x.transport = "discard".into();
                    None
                }
                Route::Defer(why) => {
                    x.transport = "defer".into();
                    x.outcome = why;
                    None
                }
            };
            if let Some(d) = dest {
                let (c, rate, rcpts) = s.limits(&d);
                x.concurrency = c as u32;
                x.rate_delay_ms = rate.as_millis() as u64;
                x.recipient_limit = rcpts as u32;
                let (f, w) = dests.get(&d).copied().unwrap_or((0, 0));
                x.in_flight = f;
                x.waiting = w;
            }
            // Mail for the domain outside the active set, and its next try.
            let mut next = u64::MAX;
            let _ = each_listed(&agents, async |l: qq::Listed| {
                if let Some((_, e)) = entry_of(&agents, &l).await
                    && e.recipients.iter().any(|r| {
                        r.address
                            .rsplit_once('@')
                            .is_some_and(|(_, d)| d.eq_ignore_ascii_case(&domain))
                    })
                {
                    x.deferred += 1;
                    if l.place == qq::Place::Deferred {
                        next = next.min(l.due_us / 1_000_000);
                    }
                }
                true
            })
            .await;
            x.next_retry = if next == u64::MAX { 0 } else { next };
            let _ = reply.send(Out::Reply(Reply::Explained(Box::new(x))));
        });
    }
}

/// The hosts a delivery to `nexthop` would try, as the smtp client finds
/// them (this process has no interface addresses of its own to drop).
async fn hops(resolver: &crate::smtp::ResolverClient, nexthop: &str, x: &mut Explanation) {
    let nh = match dest::parse_nexthop(nexthop) {
        Ok(n) => n,
        Err(e) => {
            x.dns_error = e;
            return;
        }
    };
    match dest::route(resolver, &nh, &[]).await {
        Ok(hosts) => {
            x.hops = hosts
                .into_iter()
                .take(MAX_HOPS)
                .map(|h| Hop {
                    host: h.name,
                    preference: h.preference,
                    addresses: h
                        .addrs
                        .iter()
                        .take(MAX_HOPS)
                        .map(ToString::to_string)
                        .collect(),
                })
                .collect();
        }
        Err(dest::RouteError::Permanent(dsn, why) | dest::RouteError::Temporary(dsn, why)) => {
            x.dns_error = format!("{dsn} {why}");
        }
    }
}

/// The TLS policy a delivery would use, and what chose it: a policy table
/// (smtp_ or lmtp_tls_policy_maps) by the keys the client asks, else the
/// security level parameter.
async fn tls_policy(
    tables: &TableCache,
    (maps_param, maps): (&str, &[TableRef]),
    (level_param, level): (&str, &str),
    keys: Vec<String>,
) -> (String, String) {
    if maps.is_empty() {
        return (
            level.to_string(),
            format!("{level_param} (no per-destination TLS policy)"),
        );
    }
    for key in keys {
        match tables.lookup_any(maps, &key).await {
            Ok(Some(v)) => {
                let usable = match crate::smtp::parse_tls_entry(&v) {
                    Ok(_) => String::new(),
                    Err(e) => format!("; not usable, deliveries defer: {e}"),
                };
                return (v, format!("{maps_param}, key {key}{usable}"));
            }
            Ok(None) => {}
            Err(e) => {
                return (
                    "unknown".into(),
                    format!("{maps_param} lookup error (deliveries defer): {e}"),
                );
            }
        }
    }
    (
        level.to_string(),
        format!("{level_param} (no {maps_param} entry)"),
    )
}
