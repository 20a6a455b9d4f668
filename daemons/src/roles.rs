//! The process table in code: what each role may do. SECURITY.md documents
//! the same table, and a test compares it with what `postern status --json`
//! reports for a running instance.
use std::os::fd::RawFd;
use std::path::PathBuf;

use postern_config::{Params, Role};
use postern_sandbox::{
    FsAccess, FsRule, JailSpec, LandlockMode, Network, SeccompMode, SyscallGroups,
};

pub struct RoleSpec {
    pub role: Role,
    /// Needs the host network (outbound connections).
    pub network: bool,
    pub syscalls: SyscallGroups,
    /// Only one process of this role may run at a time: a reload stops the
    /// old one before starting the new one (queue owner, scheduler).
    pub exclusive: bool,
    /// Accepts the inet listeners of master.cf.
    pub listeners: bool,
    /// Started when another role first asks for a channel to it, not at
    /// start-up (Postfix starts services on demand too): a mail system that
    /// never bounces or never authenticates never runs these.
    pub on_demand: bool,
    /// The role's main function (`postern daemon ROLE`).
    pub main: fn(RawFd) -> !,
}

const COMMON: SyscallGroups = SyscallGroups::BASE
    .union(SyscallGroups::RUNTIME)
    .union(SyscallGroups::IPC);

pub const SPECS: &[RoleSpec] = &[
    RoleSpec {
        role: Role::Broker,
        network: false,
        syscalls: COMMON
            .union(SyscallGroups::FS_READ)
            .union(SyscallGroups::FS_WRITE),
        exclusive: true,
        listeners: false,
        on_demand: false,
        main: crate::broker::main,
    },
    RoleSpec {
        role: Role::Smtpd,
        network: false,
        syscalls: COMMON.union(SyscallGroups::ACCEPT),
        exclusive: false,
        listeners: true,
        on_demand: false,
        main: crate::smtpd::main,
    },
    RoleSpec {
        role: Role::Cleanup,
        network: false,
        // Milters' changes: the queue file is read back and written again.
        syscalls: COMMON.union(SyscallGroups::HELD_FILE),
        exclusive: false,
        listeners: false,
        on_demand: false,
        main: crate::cleanup::main,
    },
    RoleSpec {
        role: Role::Qmgr,
        network: false,
        syscalls: COMMON,
        exclusive: true,
        listeners: false,
        on_demand: false,
        main: crate::qmgr::main,
    },
    RoleSpec {
        role: Role::Local,
        network: false,
        syscalls: COMMON
            .union(SyscallGroups::FS_READ)
            .union(SyscallGroups::FS_WRITE),
        exclusive: false,
        listeners: false,
        on_demand: false,
        main: crate::local::main,
    },
    RoleSpec {
        role: Role::Resolver,
        network: true,
        syscalls: COMMON.union(SyscallGroups::CONNECT),
        exclusive: false,
        listeners: false,
        on_demand: false,
        main: crate::resolver::main,
    },
    RoleSpec {
        role: Role::Smtp,
        network: true,
        syscalls: COMMON.union(SyscallGroups::CONNECT),
        exclusive: false,
        listeners: false,
        on_demand: false,
        main: crate::smtp::main,
    },
    RoleSpec {
        role: Role::Bounce,
        network: false,
        syscalls: COMMON,
        exclusive: false,
        listeners: false,
        on_demand: true,
        main: crate::bounce::main,
    },
    RoleSpec {
        role: Role::Pickup,
        network: false,
        // Accepts on the public socket; reads and removes maildrop files.
        syscalls: COMMON
            .union(SyscallGroups::ACCEPT)
            .union(SyscallGroups::FS_READ)
            .union(SyscallGroups::FS_WRITE),
        exclusive: true,
        listeners: false,
        // The master starts it when sendmail connects to its socket or
        // the maildrop holds mail (master/wake.rs).
        on_demand: true,
        main: crate::pickup::main,
    },
    RoleSpec {
        role: Role::Auth,
        network: false,
        syscalls: COMMON.union(SyscallGroups::FS_READ),
        // One process holds the failure counters.
        exclusive: true,
        listeners: false,
        on_demand: true,
        main: crate::auth::main,
    },
    RoleSpec {
        role: Role::Cache,
        network: false,
        syscalls: COMMON
            .union(SyscallGroups::FS_READ)
            .union(SyscallGroups::FS_WRITE),
        // One process owns the files; a reload saves, then starts anew.
        exclusive: true,
        listeners: false,
        on_demand: true,
        main: crate::cache::main,
    },
    RoleSpec {
        role: Role::Proxymap,
        // TCP to the ports of the table servers the configuration names.
        network: true,
        syscalls: COMMON.union(SyscallGroups::CONNECT),
        exclusive: false,
        listeners: false,
        // Only a configuration with tcp: or socketmap: tables runs it.
        on_demand: true,
        main: crate::proxymap::main,
    },
    RoleSpec {
        role: Role::Verify,
        // Asks qmgr for probes; no files, no network.
        network: false,
        syscalls: COMMON,
        // One process knows which probes are in flight.
        exclusive: true,
        listeners: false,
        // Only reject_unverified_* in a restriction list wakes it.
        on_demand: true,
        main: crate::verify::main,
    },
    RoleSpec {
        role: Role::Metrics,
        // Accepts on the metrics_listen sockets the master bound; no
        // files, no network namespace of its own.
        network: false,
        syscalls: COMMON.union(SyscallGroups::ACCEPT),
        // One process holds the figures.
        exclusive: true,
        listeners: false,
        // Started at start-up, but only when metrics_listen is set.
        on_demand: false,
        main: crate::metrics::serve::main,
    },
    RoleSpec {
        role: Role::Policy,
        // TCP to the ports of the policy services the configuration names;
        // the master connects to Unix-socket services for it.
        network: true,
        syscalls: COMMON.union(SyscallGroups::CONNECT),
        exclusive: false,
        listeners: false,
        // Only check_policy_service in a restriction list wakes it.
        on_demand: true,
        main: crate::policy::main,
    },
    RoleSpec {
        role: Role::Milter,
        // TCP to the ports of the configured Milters; the master connects
        // to Unix-socket Milters for it.
        network: true,
        syscalls: COMMON.union(SyscallGroups::CONNECT),
        // One process holds every smtpd session's Milter connections, so
        // cleanup finds the session it attaches to.
        exclusive: true,
        listeners: false,
        // Only smtpd_milters or non_smtpd_milters wakes it (cleanup asks).
        on_demand: true,
        main: crate::milter::main,
    },
    RoleSpec {
        role: Role::Postscreen,
        // Accepts on the postscreen services' listeners the master bound,
        // and hands passed clients' sockets to smtpd; no files, no
        // network namespace of its own (DNS lists through the resolver).
        network: false,
        syscalls: COMMON.union(SyscallGroups::ACCEPT),
        // One process, as in Postfix (maxproc 1): it alone counts the
        // clients being screened and holds the results in memory.
        exclusive: true,
        listeners: true,
        // Started at start-up, but only when master.cf has a postscreen
        // service.
        on_demand: false,
        main: crate::postscreen::main,
    },
    RoleSpec {
        role: Role::Sts,
        // HTTPS to port 443 of the policy hosts (mta-sts.DOMAIN), names
        // through the resolver; no files (its cache is the state store's).
        network: true,
        syscalls: COMMON.union(SyscallGroups::CONNECT),
        // One process holds the policies in memory.
        exclusive: true,
        listeners: false,
        // The smtp client asks it, for MX destinations, when
        // smtp_mta_sts_enable is on.
        on_demand: true,
        main: crate::sts::main,
    },
];

pub fn spec(role: Role) -> Option<&'static RoleSpec> {
    SPECS.iter().find(|s| s.role == role)
}

/// Every role the master supervises, in start order.
pub fn all() -> impl Iterator<Item = Role> {
    SPECS.iter().map(|s| s.role)
}

/// The roles the master starts at start-up, in order (the others start on
/// first use; the metrics role only with metrics_listen set).
pub fn started(params: &Params) -> impl Iterator<Item = Role> + '_ {
    SPECS
        .iter()
        .filter(|s| !s.on_demand || wanted_at_start(s.role, params))
        .filter(|s| configured(s.role, params))
        .map(|s| s.role)
}

/// An on-demand role the configuration wants running from the start:
/// the sts role when it sends TLS-RPT reports (smtp_tls_rpt_enable), so
/// that each day's reports leave after midnight even when no mail goes
/// to a policy domain that day.
pub fn wanted_at_start(role: Role, params: &Params) -> bool {
    role == Role::Sts && params.bool("smtp_tls_rpt_enable").unwrap_or(false)
}

/// Does the configuration use `role` at all? (Only the metrics role, without
/// metrics_listen, and postscreen, without a postscreen service, are off.)
pub fn configured(role: Role, params: &Params) -> bool {
    match role {
        Role::Metrics => !params.str("metrics_listen").trim().is_empty(),
        Role::Postscreen => !params.str("postern_postscreen_services").trim().is_empty(),
        _ => true,
    }
}

/// The role's uid and gid when Postern runs as root.
pub fn ids(role: Role, params: &Params) -> (u32, u32) {
    let base = params.int("role_id_base").unwrap_or(60200) as u32;
    let id = base + role.id_offset();
    (id, id)
}

/// Paths each role's landlock rules name.
pub fn paths(role: Role, params: &Params) -> Vec<FsRule> {
    let rw = |p: &str| FsRule {
        path: PathBuf::from(p),
        access: FsAccess::ReadWrite,
    };
    match role {
        // Table files reach the broker as descriptors the master opened.
        Role::Broker => vec![rw(params.str("queue_directory"))],
        Role::Local => vec![rw(params.str("mail_spool_directory"))],
        Role::Cache => vec![rw(&crate::paths::cache_dir(params).display().to_string())],
        Role::Pickup => vec![rw(&crate::paths::maildrop_dir(params)
            .display()
            .to_string())],
        // The password file is replaced by rename: name its directory.
        Role::Auth => sasl_dir(params)
            .map(|d| {
                vec![FsRule {
                    path: d,
                    access: FsAccess::Read,
                }]
            })
            .unwrap_or_default(),
        _ => vec![],
    }
}

/// The directory of `smtpd_sasl_password_file` (which holds nothing else).
pub fn sasl_dir(params: &Params) -> Option<PathBuf> {
    std::path::Path::new(params.str("smtpd_sasl_password_file"))
        .parent()
        .map(std::path::Path::to_path_buf)
}

/// Builds the jail for `role` from its configuration slice.
pub fn jail_spec(role: Role, params: &Params, keep_fds: Vec<RawFd>) -> JailSpec {
    let s = spec(role).expect("jail_spec for a started role");
    JailSpec {
        role: role.name().into(),
        ids: Some(ids(role, params)),
        network: match (s.network, role) {
            // DNS over TCP to the configured nameservers only.
            (true, Role::Resolver) => Network::Outbound {
                tcp_ports: Some(
                    crate::resolver::nameservers(params)
                        .unwrap_or_default()
                        .iter()
                        .map(|a| a.port())
                        .collect(),
                ),
            },
            // The table servers' ports only.
            (true, Role::Proxymap) => Network::Outbound {
                tcp_ports: Some(crate::proxymap::ports(params)),
            },
            // The policy services' ports only.
            (true, Role::Policy) => Network::Outbound {
                tcp_ports: Some(crate::policy::ports(params)),
            },
            // The Milters' ports only.
            (true, Role::Milter) => Network::Outbound {
                tcp_ports: Some(crate::milter::ports(params)),
            },
            // HTTPS only.
            (true, Role::Sts) => Network::Outbound {
                tcp_ports: Some(vec![443]),
            },
            // Next hops may use any port (relayhost, transport_maps).
            (true, _) => Network::Outbound { tcp_ports: None },
            (false, _) => Network::None,
        },
        fs_rules: paths(role, params),
        keep_fds,
        syscalls: s.syscalls,
        landlock: match params.str("landlock_enforcement") {
            "best_effort" => LandlockMode::BestEffort,
            _ => LandlockMode::Required,
        },
        seccomp: match params.str("sandbox_seccomp_action") {
            "kill" => SeccompMode::Kill,
            "log" => SeccompMode::Log,
            _ => SeccompMode::Errno,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_but_the_master_has_one_spec() {
        for r in Role::ALL {
            let n = SPECS.iter().filter(|s| s.role == *r).count();
            assert_eq!(n, usize::from(*r != Role::Master), "{r}");
        }
    }
}
