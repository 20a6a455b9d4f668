//! The peer graph, declared once: which role may ask the master for a
//! channel to which. Anything else is a protocol violation by the asker.
use postern_config::Role;

/// (client, server) pairs.
pub const EDGES: &[(Role, Role)] = &[
    (Role::Smtpd, Role::Cleanup),
    (Role::Smtpd, Role::Broker),
    (Role::Cleanup, Role::Broker),
    (Role::Qmgr, Role::Broker),
    (Role::Qmgr, Role::Local),
    (Role::Qmgr, Role::Bounce),
    (Role::Local, Role::Cleanup),
    (Role::Bounce, Role::Cleanup),
    (Role::Qmgr, Role::Smtp),
    (Role::Smtp, Role::Resolver),
    (Role::Smtp, Role::Broker),
    (Role::Smtpd, Role::Auth),
    (Role::Pickup, Role::Cleanup),
    (Role::Auth, Role::Cache),
];

pub fn allowed(client: Role, server: Role) -> bool {
    EDGES.contains(&(client, server))
}
