//! The peer graph, declared once: which role may open which edge to which
//! role. The master grants channels only along it (anything else is a
//! protocol violation by the asker), and a daemon accepts a channel only
//! from a role listed here, and only the edges listed for that pair.
use postern_config::Role;
use postern_ipc::{
    auth, bounce, cache, cleanup_broker, deliver, keys, metrics, milter, policy, postscreen_smtpd,
    probe, proxymap, qmgr_broker, qmgr_queue, resolver, smtpd_broker, smtpd_cleanup, sts, verify,
};

/// (client, server, the edges the client may open).
pub const EDGES: &[(Role, Role, &[&str])] = &[
    (Role::Smtpd, Role::Cleanup, &[smtpd_cleanup::EDGE]),
    (Role::Smtpd, Role::Broker, &[smtpd_broker::EDGE, keys::EDGE]),
    (Role::Cleanup, Role::Broker, &[cleanup_broker::EDGE]),
    (
        Role::Qmgr,
        Role::Broker,
        &[qmgr_broker::EDGE, qmgr_queue::EDGE],
    ),
    (Role::Qmgr, Role::Local, &[deliver::EDGE]),
    (Role::Qmgr, Role::Bounce, &[bounce::EDGE]),
    (Role::Local, Role::Cleanup, &[smtpd_cleanup::EDGE]),
    (Role::Bounce, Role::Cleanup, &[smtpd_cleanup::EDGE]),
    (Role::Qmgr, Role::Smtp, &[deliver::EDGE]),
    (Role::Smtp, Role::Resolver, &[resolver::EDGE]),
    // DKIM keys (and later SPF, DMARC, ARC records) for the message
    // authentication checks.
    (Role::Cleanup, Role::Resolver, &[resolver::EDGE]),
    (Role::Smtp, Role::Broker, &[keys::EDGE, smtpd_broker::EDGE]),
    (Role::Smtpd, Role::Auth, &[auth::EDGE]),
    // Client names, DNS lists, and the domain checks of the restrictions.
    (Role::Smtpd, Role::Resolver, &[resolver::EDGE]),
    (Role::Pickup, Role::Cleanup, &[smtpd_cleanup::EDGE]),
    (Role::Auth, Role::Cache, &[cache::EDGE]),
    // External tables (tcp:, socketmap:), for every role that looks up.
    (Role::Broker, Role::Proxymap, &[proxymap::EDGE]),
    (Role::Qmgr, Role::Proxymap, &[proxymap::EDGE]),
    // `postern queue explain`: the MX hosts and addresses of a next hop.
    (Role::Qmgr, Role::Resolver, &[resolver::EDGE]),
    (Role::Local, Role::Proxymap, &[proxymap::EDGE]),
    (Role::Pickup, Role::Proxymap, &[proxymap::EDGE]),
    (Role::Cleanup, Role::Proxymap, &[proxymap::EDGE]),
    // Address verification: smtpd asks verify; only verify asks qmgr for a
    // probe, and only verify writes the results it learns.
    (Role::Smtpd, Role::Verify, &[verify::EDGE]),
    (Role::Verify, Role::Qmgr, &[probe::EDGE]),
    (Role::Verify, Role::Cache, &[cache::EDGE]),
    // check_policy_service: only smtpd asks, and only the policy role
    // talks to policy servers.
    (Role::Smtpd, Role::Policy, &[policy::EDGE]),
    // Milters: smtpd sends the SMTP events, cleanup the message (and it
    // applies the changes); only the milter role talks to Milters.
    (Role::Cleanup, Role::Milter, &[milter::EDGE]),
    (Role::Smtpd, Role::Milter, &[milter::EDGE]),
    // postscreen: passed clients' sockets to smtpd, DNS lists through the
    // resolver, and its results in the state store.
    (Role::Postscreen, Role::Smtpd, &[postscreen_smtpd::EDGE]),
    (Role::Postscreen, Role::Resolver, &[resolver::EDGE]),
    (Role::Postscreen, Role::Cache, &[cache::EDGE]),
    // MTA-STS: smtp asks the sts role, which alone fetches policies over
    // HTTPS; it resolves the policy hosts and keeps the policies.
    (Role::Smtp, Role::Sts, &[sts::EDGE]),
    (Role::Sts, Role::Resolver, &[resolver::EDGE]),
    (Role::Sts, Role::Cache, &[cache::EDGE]),
    // TLS-RPT reports to mailto: addresses go out as mail.
    (Role::Sts, Role::Cleanup, &[smtpd_cleanup::EDGE]),
    // Every process reports its figures to the metrics role (the master
    // over a channel it makes itself); nothing asks the metrics role
    // anything, and it opens nothing.
    (Role::Master, Role::Metrics, &[metrics::EDGE]),
    (Role::Broker, Role::Metrics, &[metrics::EDGE]),
    (Role::Smtpd, Role::Metrics, &[metrics::EDGE]),
    (Role::Cleanup, Role::Metrics, &[metrics::EDGE]),
    (Role::Qmgr, Role::Metrics, &[metrics::EDGE]),
    (Role::Resolver, Role::Metrics, &[metrics::EDGE]),
    (Role::Smtp, Role::Metrics, &[metrics::EDGE]),
    (Role::Local, Role::Metrics, &[metrics::EDGE]),
    (Role::Bounce, Role::Metrics, &[metrics::EDGE]),
    (Role::Pickup, Role::Metrics, &[metrics::EDGE]),
    (Role::Auth, Role::Metrics, &[metrics::EDGE]),
    (Role::Cache, Role::Metrics, &[metrics::EDGE]),
    (Role::Proxymap, Role::Metrics, &[metrics::EDGE]),
    (Role::Verify, Role::Metrics, &[metrics::EDGE]),
    (Role::Policy, Role::Metrics, &[metrics::EDGE]),
    (Role::Milter, Role::Metrics, &[metrics::EDGE]),
    (Role::Postscreen, Role::Metrics, &[metrics::EDGE]),
    (Role::Sts, Role::Metrics, &[metrics::EDGE]),
];

/// May `client` ask for a channel to `server` at all?
pub fn allowed(client: Role, server: Role) -> bool {
    EDGES.iter().any(|(c, s, _)| *c == client && *s == server)
}

/// May `client` open `edge` to `server`?
pub fn carries(client: Role, server: Role, edge: &str) -> bool {
    EDGES
        .iter()
        .any(|(c, s, e)| *c == client && *s == server && e.contains(&edge))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_edge_is_named_once_and_known() {
        for (i, (c, s, edges)) in EDGES.iter().enumerate() {
            assert!(!edges.is_empty(), "{c} -> {s} carries nothing");
            assert!(
                EDGES[i + 1..].iter().all(|(c2, s2, _)| (c2, s2) != (c, s)),
                "{c} -> {s} listed twice"
            );
            assert_ne!(c, s);
        }
        assert!(carries(Role::Auth, Role::Cache, "cache"));
        assert!(!carries(Role::Smtpd, Role::Cache, "cache"));
        assert!(carries(Role::Smtpd, Role::Resolver, "resolver"));
        assert!(!carries(Role::Smtpd, Role::Proxymap, "proxymap"));
        assert!(!carries(Role::Smtpd, Role::Broker, "cleanup-broker"));
        // Nothing but verify may ask for a probe.
        for (c, s, edges) in EDGES {
            assert!(
                !edges.contains(&probe::EDGE) || (*c, *s) == (Role::Verify, Role::Qmgr),
                "{c} -> {s} carries probe"
            );
        }
        // Every role reports figures, and the metrics role talks to no one.
        for r in Role::ALL.iter().filter(|r| **r != Role::Metrics) {
            assert!(carries(*r, Role::Metrics, metrics::EDGE), "{r}");
            assert!(!allowed(Role::Metrics, *r), "{r}");
        }
    }
}
