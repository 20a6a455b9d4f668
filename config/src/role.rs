//! The process table: every role the `postern` binary can run as. A new
//! role is one line here (its name, in the order that fixes its uid
//! offset) plus its entry in `daemons/src/roles.rs` (what it may do and
//! its main function) and its module.

macro_rules! roles {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)+) => {
        /// A daemon role. The master is a role too, though it is never jailed.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Role {
            $($(#[$doc])* $variant,)+
        }

        impl Role {
            /// Every role, in declaration order.
            pub const ALL: &'static [Role] = &[$(Role::$variant,)+];

            pub fn name(self) -> &'static str {
                match self {
                    $(Role::$variant => $name,)+
                }
            }
        }
    };
}

// Append new roles at the end: the position is the role's uid offset.
roles! {
    Master => "master",
    Broker => "broker",
    Smtpd => "smtpd",
    Cleanup => "cleanup",
    Qmgr => "qmgr",
    Resolver => "resolver",
    Smtp => "smtp",
    Local => "local",
    Bounce => "bounce",
    Pickup => "pickup",
    /// Checks SASL passwords; the only process that reads the hashes.
    Auth => "auth",
    /// The persistent state store: owns the cache files.
    Cache => "cache",
    /// Looks keys up in external tables (tcp:, socketmap:): the only role
    /// that talks to table servers.
    Proxymap => "proxymap",
    /// Address verification (verify(8)): the cache of probe results, and
    /// the only role that may ask for a probe.
    Verify => "verify",
    /// Serves the Prometheus endpoint (metrics_listen): the figures the
    /// other roles report to it, and nothing else.
    Metrics => "metrics",
    /// The policy delegation client (check_policy_service): the only role
    /// that talks to policy servers.
    Policy => "policy",
    /// The Milter client (smtpd_milters, non_smtpd_milters): the only role
    /// that talks to Milters.
    Milter => "milter",
    /// Screens port-25 clients before smtpd sees them (postscreen(8)):
    /// accepts on the postscreen service's listeners, hands passed
    /// clients' sockets to smtpd.
    Postscreen => "postscreen",
    /// Fetches MTA-STS policies (RFC 8461) over HTTPS for the smtp client:
    /// the only role that talks to HTTPS servers.
    Sts => "sts",
}

impl Role {
    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.iter().copied().find(|r| r.name() == name)
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

#[cfg(test)]
mod tests {
    use super::Role;

    #[test]
    fn names_round_trip_and_offsets_follow_the_order() {
        for (i, r) in Role::ALL.iter().enumerate() {
            assert_eq!(Role::from_name(r.name()), Some(*r));
            assert_eq!(r.id_offset() as usize, i);
        }
        assert!(Role::ALL.len() < 32, "parameter slices are a u32 bit set");
        assert_eq!(Role::from_name("nosuch"), None);
    }
}
