//! The broker's answers to smtpd's and smtp's table lookups: each role
//! only from the tables it needs (smtp never learns who the local users
//! are, smtpd never sees a relay password), and smtpd's access maps only
//! from the tables its restriction lists name.
use std::rc::Rc;

use postern_config::{Params, Role};
use postern_ipc::smtpd_broker as sb;
use postern_ipc::{Channel, ChannelError, Endpoint};
use tokio::sync::watch;

use super::dropped;
use crate::tablecache::{TableRef, table_list};
use crate::warn;

/// The tables the broker answers lookups from.
pub struct Lookups {
    /// `local_recipient_maps` (empty: no validation), for smtpd.
    local: Vec<TableRef>,
    /// `smtpd_sender_login_maps`, for smtpd.
    sender_login: Vec<TableRef>,
    /// `smtp_sasl_password_maps`, for smtp only.
    sasl_password: Vec<TableRef>,
    /// `smtp_tls_policy_maps`, for smtp.
    tls_policy: Vec<TableRef>,
    /// `lmtp_tls_policy_maps`, for smtp's LMTP sessions.
    lmtp_tls_policy: Vec<TableRef>,
    /// `relay_recipient_maps`, for smtpd.
    relay_recipient: Vec<TableRef>,
    /// `virtual_alias_maps` and `virtual_alias_domains`, for smtpd's
    /// recipient validation.
    virtual_alias: Vec<TableRef>,
    virtual_domains: crate::addrmap::Domains,
    /// `smtp_generic_maps`, for smtp, and whether extensions carry over.
    generic: Vec<TableRef>,
    propagate_generic: bool,
    /// `virtual_mailbox_maps` and `virtual_mailbox_domains`, likewise.
    virtual_mailbox: Vec<TableRef>,
    mailbox_domains: crate::addrmap::Domains,
    site: crate::addrmap::Site,
    /// `dkim_signing_table`, for the DKIM requests of smtp's key channel.
    pub(super) dkim_signing: Vec<TableRef>,
    /// The access tables smtpd's restriction lists name, by their name
    /// there (`postern_access_maps`): smtpd may ask only these.
    access: Vec<(String, TableRef)>,
}

pub fn lookups(params: &Params) -> Result<Lookups, String> {
    let names = params.list("postern_access_maps").unwrap_or_default();
    let refs = table_list(params, "postern_access_maps");
    Ok(Lookups {
        local: table_list(params, "local_recipient_maps"),
        sender_login: table_list(params, "smtpd_sender_login_maps"),
        sasl_password: table_list(params, "smtp_sasl_password_maps"),
        tls_policy: table_list(params, "smtp_tls_policy_maps"),
        lmtp_tls_policy: table_list(params, "lmtp_tls_policy_maps"),
        relay_recipient: table_list(params, "relay_recipient_maps"),
        virtual_alias: table_list(params, "virtual_alias_maps"),
        virtual_domains: crate::addrmap::Domains::new(params, "virtual_alias_domains"),
        virtual_mailbox: table_list(params, "virtual_mailbox_maps"),
        generic: table_list(params, "smtp_generic_maps"),
        dkim_signing: table_list(params, "dkim_signing_table"),
        propagate_generic: params
            .list("propagate_unmatched_extensions")
            .unwrap_or_default()
            .iter()
            .any(|v| v == "generic"),
        mailbox_domains: crate::addrmap::Domains::new(params, "virtual_mailbox_domains"),
        site: crate::addrmap::Site::new(params),
        access: names.into_iter().zip(refs).collect(),
    })
}

pub(super) async fn lookup_conn(
    role: Role,
    current: watch::Receiver<Rc<Lookups>>,
    cache: Rc<crate::tablecache::TableCache>,
    ch: Channel,
) {
    let mut ep = Endpoint::<sb::Reply, sb::Request>::from_channel(ch);
    loop {
        let req = match ep.recv().await {
            Ok(r) => r,
            Err(ChannelError::Violation(v)) => return dropped(role.name(), v),
            Err(_) => return,
        };
        let tables = current.borrow().clone();
        if let (Role::Smtpd, sb::Request::Access { map, keys }) = (role, &req) {
            let Some((_, t)) = tables.access.iter().find(|(n, _)| n == map) else {
                return dropped(
                    role.name(),
                    format!("access lookup in {map}, which no restriction names"),
                );
            };
            let reply = match cache.access(t, keys).await {
                Ok(Some((i, v))) => sb::Reply::Hit(i as u32, v),
                Ok(None) => sb::Reply::Found(false),
                Err(e) => {
                    warn!("{map}: {e}");
                    sb::Reply::Tempfail(e)
                }
            };
            if ep.send(&reply).await.is_err() {
                return;
            }
            continue;
        }
        if let (
            Role::Smtpd,
            sb::Request::Lookup(
                t @ (sb::Table::VirtualAlias
                | sb::Table::VirtualAliasDomain
                | sb::Table::VirtualMailbox
                | sb::Table::VirtualMailboxDomain),
                k,
            ),
        ) = (role, &req)
        {
            let (answer, name) = match t {
                sb::Table::VirtualAlias => (
                    listed(&cache, &tables.virtual_alias, &tables.site, k).await,
                    "virtual_alias_maps",
                ),
                sb::Table::VirtualAliasDomain => (
                    tables.virtual_domains.contains(&cache, k).await,
                    "virtual_alias_domains",
                ),
                sb::Table::VirtualMailbox => (
                    listed(&cache, &tables.virtual_mailbox, &tables.site, k).await,
                    "virtual_mailbox_maps",
                ),
                _ => (
                    tables.mailbox_domains.contains(&cache, k).await,
                    "virtual_mailbox_domains",
                ),
            };
            let reply = match answer {
                Ok(found) => sb::Reply::Found(found),
                Err(e) => {
                    warn!("{name}: {e}");
                    sb::Reply::Tempfail(e)
                }
            };
            if ep.send(&reply).await.is_err() {
                return;
            }
            continue;
        }
        if let (Role::Smtp, sb::Request::Lookup(sb::Table::Generic, addr)) = (role, &req) {
            let f = crate::addrmap::Maps {
                cache: &cache,
                tables: &tables.generic,
            };
            let reply =
                match crate::addrmap::map(&f, &tables.site, addr, tables.propagate_generic).await {
                    Ok(Some(list)) => {
                        if list.len() > 1 {
                            warn!("multi-valued smtp_generic_maps result for {addr}");
                        }
                        sb::Reply::Value(list.into_iter().next().unwrap_or_default())
                    }
                    Ok(None) => sb::Reply::Found(false),
                    Err(e) => {
                        warn!("smtp_generic_maps: {e}");
                        sb::Reply::Tempfail(e)
                    }
                };
            if ep.send(&reply).await.is_err() {
                return;
            }
            continue;
        }
        // Each role sees only the tables it needs: smtp never learns who
        // the local users are, smtpd never sees a relay password.
        let (list, key, name) = match (role, &req) {
            (Role::Smtpd, sb::Request::LocalRecipient(l)) => {
                (&tables.local, l, "local_recipient_maps")
            }
            (Role::Smtpd, sb::Request::Lookup(sb::Table::SenderLogin, k)) => {
                (&tables.sender_login, k, "smtpd_sender_login_maps")
            }
            (Role::Smtpd, sb::Request::Lookup(sb::Table::RelayRecipient, k)) => {
                (&tables.relay_recipient, k, "relay_recipient_maps")
            }
            (Role::Smtp, sb::Request::Lookup(sb::Table::SaslPassword, k)) => {
                (&tables.sasl_password, k, "smtp_sasl_password_maps")
            }
            (Role::Smtp, sb::Request::Lookup(sb::Table::TlsPolicy, k)) => {
                (&tables.tls_policy, k, "smtp_tls_policy_maps")
            }
            (Role::Smtp, sb::Request::Lookup(sb::Table::LmtpTlsPolicy, k)) => {
                (&tables.lmtp_tls_policy, k, "lmtp_tls_policy_maps")
            }
            _ => return dropped(role.name(), format!("lookup outside its tables: {req:?}")),
        };
        let local = matches!(req, sb::Request::LocalRecipient(_));
        let reply = if local && list.is_empty() {
            sb::Reply::Found(true)
        } else {
            match cache.lookup_any(list, key).await {
                Ok(Some(_)) if local => sb::Reply::Found(true),
                Ok(Some(v)) => sb::Reply::Value(v),
                Ok(None) => sb::Reply::Found(false),
                Err(e) => {
                    warn!("{name}: {e}");
                    sb::Reply::Tempfail(e)
                }
            }
        };
        if ep.send(&reply).await.is_err() {
            return;
        }
    }
}

/// Whether `address` is in `list` as mail_addr_find looks (the whole
/// address, without its extension, the local part in a local domain,
/// `@domain`).
async fn listed(
    cache: &crate::tablecache::TableCache,
    list: &[TableRef],
    site: &crate::addrmap::Site,
    address: &str,
) -> Result<bool, String> {
    let f = crate::addrmap::Maps {
        cache,
        tables: list,
    };
    Ok(crate::addrmap::find(&f, site, address).await?.is_some())
}
