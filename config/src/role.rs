//! The process table: every role the `postern` binary can run as.

/// A daemon role. The master is a role too, though it is never jailed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Master,
    Broker,
    Smtpd,
    Cleanup,
    Qmgr,
    Resolver,
    Smtp,
    Local,
    Bounce,
    Pickup,
    /// Checks SASL passwords; the only process that reads the hashes.
    Auth,
    /// The persistent state store: owns the cache files.
    Cache,
    /// Looks keys up in external tables (tcp:, socketmap:): the only role
    /// that talks to table servers.
    Proxymap,
    /// Address verification (verify(8)): the cache of probe results, and
    /// the only role that may ask for a probe.
    Verify,
}

impl Role {
    pub const ALL: [Role; 14] = [
        Role::Master,
        Role::Broker,
        Role::Smtpd,
        Role::Cleanup,
        Role::Qmgr,
        Role::Resolver,
        Role::Smtp,
        Role::Local,
        Role::Bounce,
        Role::Pickup,
        Role::Auth,
        Role::Cache,
        Role::Proxymap,
        Role::Verify,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Broker => "broker",
            Role::Smtpd => "smtpd",
            Role::Cleanup => "cleanup",
            Role::Qmgr => "qmgr",
            Role::Resolver => "resolver",
            Role::Smtp => "smtp",
            Role::Local => "local",
            Role::Bounce => "bounce",
            Role::Pickup => "pickup",
            Role::Auth => "auth",
            Role::Cache => "cache",
            Role::Proxymap => "proxymap",
            Role::Verify => "verify",
        }
    }

    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }

    /// Bit for parameter slices.
    pub const fn bit(self) -> u32 {
        1 << (self as u32)
    }

    /// Offset from `role_id_base` of this role's uid and gid when run as root.
    pub fn id_offset(self) -> u32 {
        self as u32
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
