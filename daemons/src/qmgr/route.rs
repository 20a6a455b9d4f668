//! Where a recipient goes, in trivial-rewrite's order (resolve.c):
//!
//! 1. the address class: a local domain (mydestination) takes
//!    local_transport; a virtual alias domain that cleanup did not alias is
//!    "User unknown in virtual alias table"; a virtual mailbox domain
//!    takes virtual_transport; a relay domain relay_transport; anything
//!    else sender_dependent_default_transport_maps or default_transport;
//! 2. off-host mail goes to sender_dependent_relayhost_maps' next hop,
//!    else relayhost, else the recipient's domain;
//! 3. a next hop written in the transport parameter (`lmtp:unix:/path`)
//!    overrides that;
//! 4. transport_maps overrides any of it (not the virtual alias class);
//! 5. relocated_maps bounces an address that moved, whatever its class.
//!
//! A table that cannot be read defers the recipient: mail is never routed
//! around a table.
use postern_config::Params;

use super::sched::{self, Route};
use crate::addrmap::{self, Domains, Maps, Site};
use crate::tablecache::{TableCache, TableRef, table_list};
use crate::warn;

/// What routing needs besides the transport_maps and relayhost of a
/// [`super::Routing`].
pub struct Classes {
    pub mydestination: Vec<String>,
    virtual_alias: Domains,
    virtual_mailbox: Domains,
    relay_domains: Vec<String>,
    relay_parent: bool,
    local_transport: String,
    virtual_transport: String,
    relay_transport: String,
    default_transport: String,
    sender_relayhost: Vec<TableRef>,
    sender_transport: Vec<TableRef>,
    null_relayhost_key: String,
    null_transport_key: String,
    relocated: Vec<TableRef>,
    site: Site,
}

impl Classes {
    pub fn new(p: &Params) -> Classes {
        let lower = |n: &str| -> Vec<String> {
            p.list(n)
                .unwrap_or_default()
                .into_iter()
                .map(|d| d.to_ascii_lowercase())
                .collect()
        };
        Classes {
            mydestination: lower("mydestination"),
            virtual_alias: Domains::new(p, "virtual_alias_domains"),
            virtual_mailbox: Domains::new(p, "virtual_mailbox_domains"),
            relay_domains: lower("relay_domains"),
            relay_parent: p
                .list("parent_domain_matches_subdomains")
                .unwrap_or_default()
                .iter()
                .any(|s| s == "relay_domains"),
            local_transport: p.str("local_transport").trim().to_string(),
            virtual_transport: p.str("virtual_transport").trim().to_string(),
            relay_transport: p.str("relay_transport").trim().to_string(),
            default_transport: p.str("default_transport").trim().to_string(),
            sender_relayhost: table_list(p, "sender_dependent_relayhost_maps"),
            sender_transport: table_list(p, "sender_dependent_default_transport_maps"),
            null_relayhost_key: p.str("empty_address_relayhost_maps_lookup_key").into(),
            null_transport_key: p
                .str("empty_address_default_transport_maps_lookup_key")
                .into(),
            relocated: table_list(p, "relocated_maps"),
            site: Site::new(p),
        }
    }

    fn is_relay_domain(&self, domain: &str) -> bool {
        crate::access::domain_listed(&self.relay_domains, self.relay_parent, domain)
    }
}

/// A lookup in a list of tables as mail_addr_find does it.
async fn find(
    tables: &TableCache,
    list: &[TableRef],
    site: &Site,
    key: &str,
    name: &str,
) -> Result<Option<String>, Route> {
    if list.is_empty() {
        return Ok(None);
    }
    let f = Maps {
        cache: tables,
        tables: list,
    };
    match addrmap::find(&f, site, key).await {
        Ok(v) => Ok(v.map(|(v, _)| v.trim().to_string())),
        Err(e) => {
            warn!("{name} lookup failure for {key}: {e}");
            Err(Route::Defer(format!("{name} lookup failure")))
        }
    }
}

/// Whether `domain` is in a domain list (names and tables).
async fn in_domains(
    d: &Domains,
    tables: &TableCache,
    domain: &str,
    name: &str,
) -> Result<bool, Route> {
    d.contains(tables, domain).await.map_err(|e| {
        warn!("{name} lookup failure for {domain}: {e}");
        Route::Defer(format!("{name} lookup failure"))
    })
}

/// Routes one recipient of a message from `sender`.
pub async fn resolve(
    c: &Classes,
    how: &super::Routing,
    tables: &TableCache,
    sender: &str,
    address: &str,
) -> Route {
    match resolve_or_defer(c, how, tables, sender, address).await {
        Ok(r) | Err(r) => r,
    }
}

async fn resolve_or_defer(
    c: &Classes,
    how: &super::Routing,
    tables: &TableCache,
    sender: &str,
    address: &str,
) -> Result<Route, Route> {
    let domain = address
        .rsplit_once('@')
        .map_or("", |(_, d)| d)
        .to_ascii_lowercase();
    let (channel, mut nexthop) = if domain.is_empty() || c.mydestination.contains(&domain) {
        (c.local_transport.clone(), domain.clone())
    } else if in_domains(&c.virtual_alias, tables, &domain, "virtual_alias_domains").await? {
        // Not overridden by transport_maps (resolve.c).
        return Ok(Route::Error(
            "5.1.1 User unknown in virtual alias table".into(),
        ));
    } else if in_domains(
        &c.virtual_mailbox,
        tables,
        &domain,
        "virtual_mailbox_domains",
    )
    .await?
    {
        (c.virtual_transport.clone(), domain.clone())
    } else {
        let channel = if c.is_relay_domain(&domain) {
            c.relay_transport.clone()
        } else {
            let key = if sender.is_empty() {
                c.null_transport_key.as_str()
            } else {
                sender
            };
            match find(
                tables,
                &c.sender_transport,
                &c.site,
                key,
                "sender_dependent_default_transport_maps",
            )
            .await?
            {
                Some(x) if !x.is_empty() && !x.eq_ignore_ascii_case("DUNNO") => x,
                _ => c.default_transport.clone(),
            }
        };
        let key = if sender.is_empty() {
            c.null_relayhost_key.as_str()
        } else {
            sender
        };
        let relay = find(
            tables,
            &c.sender_relayhost,
            &c.site,
            key,
            "sender_dependent_relayhost_maps",
        )
        .await?
        .filter(|r| !r.is_empty() && !r.eq_ignore_ascii_case("DUNNO"));
        let nexthop = match relay {
            Some(r) => r,
            None if !how.relayhost.is_empty() => how.relayhost.clone(),
            None => domain.clone(),
        };
        (channel, nexthop)
    };
    // An explicit next hop in the transport setting wins.
    let (mut channel, explicit) = match channel.split_once(':') {
        Some((ch, nh)) => (ch.to_string(), nh.to_string()),
        None => (channel, String::new()),
    };
    if !explicit.is_empty() {
        nexthop = explicit;
    }
    if !how.transport_maps.is_empty() {
        for key in sched::transport_keys(address, &domain) {
            match tables.lookup_any(&how.transport_maps, &key).await {
                Ok(Some(v)) => {
                    let (ch, nh) = v.trim().split_once(':').unwrap_or((v.trim(), ""));
                    if !ch.is_empty() {
                        channel = ch.to_string();
                    }
                    // A channel without a next hop: the recipient's domain.
                    nexthop = if nh.trim().is_empty() {
                        domain.clone()
                    } else {
                        nh.trim().to_string()
                    };
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    warn!("transport_maps lookup of {key}: {e}");
                    return Err(Route::Defer("transport_maps lookup failure".into()));
                }
            }
        }
    }
    if let Some(to) = find(tables, &c.relocated, &c.site, address, "relocated_maps").await? {
        return Ok(Route::Error(format!("5.1.6 User has moved to {to}")));
    }
    let route = match channel.as_str() {
        "local" => Route::Local,
        "smtp" | "relay" => Route::Smtp(nexthop),
        "lmtp" if nexthop.is_empty() => {
            warn!("lmtp transport without a next hop for {address}");
            Route::Defer("mail transport unavailable".into())
        }
        "lmtp" => Route::Smtp(format!("lmtp:{nexthop}")),
        "error" => Route::Error(if nexthop.is_empty() || nexthop == domain {
            "delivery is disabled for this address".into()
        } else {
            nexthop
        }),
        "discard" => Route::Discard,
        other => {
            warn!("unsupported transport \"{other}\" for {address}");
            Route::Defer("mail transport unavailable".into())
        }
    };
    Ok(route)
}
