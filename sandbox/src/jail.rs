//! Entering a role's jail, in the one order that works.
//!
//! The order is fixed and every step's reason is written beside it. It runs
//! at the top of a daemon's `main`, while the process has exactly one
//! thread: landlock and seccomp bind the calling thread only on this kernel,
//! and threads created later inherit both.
use std::os::fd::RawFd;
use std::path::PathBuf;

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, NetPort, PathBeneath, PathFd,
    Ruleset, RulesetAttr, RulesetCreated, RulesetCreatedAttr, RulesetStatus, Scope,
};
use nix::unistd::{Gid, Uid};

use crate::seccomp::{self, SeccompMode, SyscallGroups};
use crate::{JailError, sys};

/// Access a role gets beneath one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsAccess {
    /// List directories and read files.
    Read,
    /// Everything but execute: create, write, link, remove, truncate.
    ReadWrite,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsRule {
    pub path: PathBuf,
    pub access: FsAccess,
}

/// The role's network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// A private, empty network namespace. Listeners handed over by the
    /// master still accept: they belong to the namespace they were made in.
    None,
    /// The host's network, for outbound connections. With `tcp_ports`,
    /// landlock allows TCP connect to those ports only.
    Outbound { tcp_ports: Option<Vec<u16>> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LandlockMode {
    /// Refuse to start unless landlock is fully enforced at the kernel's ABI.
    Required,
    /// Use what the kernel offers; report what is live.
    BestEffort,
}

/// Everything the jail needs to know about one role.
#[derive(Debug, Clone)]
pub struct JailSpec {
    pub role: String,
    /// The role's own uid/gid, used when the process runs as root.
    pub ids: Option<(u32, u32)>,
    pub network: Network,
    pub fs_rules: Vec<FsRule>,
    /// Descriptors the role keeps (beyond 0, 1, 2); all others are closed.
    pub keep_fds: Vec<RawFd>,
    pub syscalls: SyscallGroups,
    pub landlock: LandlockMode,
    pub seccomp: SeccompMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LandlockState {
    FullyEnforced,
    PartiallyEnforced,
    NotEnforced,
}

impl LandlockState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FullyEnforced => "fully_enforced",
            Self::PartiallyEnforced => "partially_enforced",
            Self::NotEnforced => "not_enforced",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetnsState {
    /// A namespace of its own with no interfaces.
    Private,
    /// The host's namespace (the role needs network, or unprivileged user
    /// namespaces are unavailable).
    Shared,
}

impl NetnsState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Private => "private",
            Self::Shared => "shared",
        }
    }
}

/// What the jail achieved, as the daemon reports it to the master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailReport {
    pub landlock: LandlockState,
    /// The landlock ABI the rules were written for (0: none).
    pub landlock_abi: i32,
    pub netns: NetnsState,
    /// True when the process switched to the role's own uid/gid.
    pub ids_switched: bool,
}

/// The steps of the jail, one method each, so the order can be tested with a
/// recording double and run for real with [`LinuxOps`].
pub trait JailOps {
    fn is_root(&self) -> bool;
    fn unshare_net(&mut self, as_root: bool) -> Result<NetnsState, JailError>;
    fn prepare_landlock(&mut self, spec: &JailSpec) -> Result<(), JailError>;
    fn clear_bounding(&mut self, as_root: bool) -> Result<(), JailError>;
    fn switch_ids(&mut self, uid: u32, gid: u32) -> Result<(), JailError>;
    fn clear_caps(&mut self) -> Result<(), JailError>;
    fn close_fds(&mut self, keep: &[RawFd]) -> Result<(), JailError>;
    fn no_new_privs(&mut self) -> Result<(), JailError>;
    fn restrict_landlock(&mut self, mode: LandlockMode) -> Result<(LandlockState, i32), JailError>;
    fn load_seccomp(&mut self, groups: SyscallGroups, mode: SeccompMode) -> Result<(), JailError>;
}

/// Enters the jail described by `spec`. On error the caller must exit: a
/// half-built jail is never used.
pub fn enter(spec: &JailSpec) -> Result<JailReport, JailError> {
    enter_with(&mut LinuxOps::default(), spec)
}

/// The fixed order. Do not reorder without re-reading the reasons.
pub fn enter_with(ops: &mut dyn JailOps, spec: &JailSpec) -> Result<JailReport, JailError> {
    let root = ops.is_root();
    // 1. Network namespace first, while we still hold CAP_SYS_ADMIN (root),
    //    or before anything else (a user namespace for an ordinary user).
    let netns = match spec.network {
        Network::None => ops.unshare_net(root)?,
        Network::Outbound { .. } => NetnsState::Shared,
    };
    // 2. Open the landlock ruleset and the path fds it names now, while the
    //    paths are still reachable with our current credentials.
    ops.prepare_landlock(spec)?;
    // 3. Drop the bounding set: PR_CAPBSET_DROP needs CAP_SETPCAP, which is
    //    gone once we setuid away from root.
    ops.clear_bounding(root || netns == NetnsState::Private)?;
    // 4. Become the role's own user: groups first (needs CAP_SETGID), then
    //    gid, then uid last (it takes the remaining capabilities with it).
    let mut ids_switched = false;
    if root && let Some((uid, gid)) = spec.ids {
        ops.switch_ids(uid, gid)?;
        ids_switched = true;
    }
    // 5. Clear every remaining capability set and read them back.
    ops.clear_caps()?;
    // 6. Close every descriptor outside the allowlist: nothing inherited by
    //    accident survives into the jail (the landlock ruleset fd is kept
    //    until step 8 consumes it).
    ops.close_fds(&spec.keep_fds)?;
    // 7. no_new_privs: no exec can ever regain privilege; also required for
    //    unprivileged landlock and seccomp.
    ops.no_new_privs()?;
    // 8. Landlock: from here on only the role's paths exist.
    let (landlock, landlock_abi) = ops.restrict_landlock(spec.landlock)?;
    // 9. Seccomp last, so the steps above may use syscalls the role never needs.
    ops.load_seccomp(spec.syscalls, spec.seccomp)?;
    Ok(JailReport {
        landlock,
        landlock_abi,
        netns,
        ids_switched,
    })
}

/// The real steps.
#[derive(Default)]
pub struct LinuxOps {
    ruleset: Option<RulesetCreated>,
    abi: i32,
    landlock_missing: Option<String>,
}

fn fs_access(access: FsAccess, abi: ABI) -> landlock::BitFlags<AccessFs> {
    match access {
        FsAccess::Read => AccessFs::ReadFile | AccessFs::ReadDir,
        // Everything but Execute (and device ioctls, which no role needs).
        FsAccess::ReadWrite => {
            let mut a = AccessFs::from_all(abi);
            a.remove(AccessFs::Execute);
            a.remove(AccessFs::IoctlDev);
            a
        }
    }
}

impl JailOps for LinuxOps {
    fn is_root(&self) -> bool {
        Uid::effective().is_root()
    }

    fn unshare_net(&mut self, as_root: bool) -> Result<NetnsState, JailError> {
        use nix::sched::{CloneFlags, unshare};
        if as_root {
            unshare(CloneFlags::CLONE_NEWNET).map_err(JailError::Netns)?;
            return Ok(NetnsState::Private);
        }
        // An ordinary user needs a user namespace to own the new network
        // namespace. Where that is not allowed, the role keeps the host's
        // network and says so; seccomp still forbids creating sockets.
        match unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET) {
            Ok(()) => Ok(NetnsState::Private),
            Err(_) => Ok(NetnsState::Shared),
        }
    }

    fn prepare_landlock(&mut self, spec: &JailSpec) -> Result<(), JailError> {
        let kernel = match sys::landlock_abi_version() {
            Ok(v) => v,
            Err(e) => {
                self.landlock_missing = Some(e.to_string());
                if spec.landlock == LandlockMode::Required {
                    return Err(JailError::LandlockUnavailable(e.to_string()));
                }
                return Ok(());
            }
        };
        // Write the rules for the kernel's own ABI (capped at what this crate
        // knows): a newer kernel gets the newer rights automatically.
        self.abi = kernel.min(10);
        let abi = ABI::from(self.abi);
        let level = match spec.landlock {
            LandlockMode::Required => CompatLevel::HardRequirement,
            LandlockMode::BestEffort => CompatLevel::BestEffort,
        };
        let mut ruleset = Ruleset::default()
            .set_compatibility(level)
            .handle_access(AccessFs::from_all(abi))?;
        if self.abi >= 4 {
            // TCP: nobody binds; connect only where the role's network allows.
            let net = match &spec.network {
                Network::Outbound { tcp_ports: None } => AccessNet::BindTcp.into(),
                _ => AccessNet::from_all(abi),
            };
            ruleset = ruleset.handle_access(net)?;
        }
        if self.abi >= 6 {
            // No signals to, and no abstract sockets of, processes outside
            // this landlock domain.
            ruleset = ruleset.scope(Scope::from_all(abi))?;
        }
        let mut created = ruleset.create()?;
        for rule in &spec.fs_rules {
            let path = rule.path.display().to_string();
            let fd = PathFd::new(&rule.path).map_err(|source| JailError::LandlockOpen {
                path: path.clone(),
                source,
            })?;
            created = created
                .add_rule(PathBeneath::new(fd, fs_access(rule.access, abi)))
                .map_err(|source| JailError::LandlockPath { path, source })?;
        }
        if let Network::Outbound {
            tcp_ports: Some(ports),
        } = &spec.network
            && self.abi >= 4
        {
            for &port in ports {
                created = created.add_rule(NetPort::new(port, AccessNet::ConnectTcp))?;
            }
        }
        self.ruleset = Some(created);
        Ok(())
    }

    fn clear_bounding(&mut self, have_setpcap: bool) -> Result<(), JailError> {
        if !have_setpcap {
            // An ordinary user with no namespace of its own holds no
            // capabilities at all; no_new_privs keeps it that way.
            return Ok(());
        }
        caps::clear(None, caps::CapSet::Bounding).map_err(JailError::Bounding)
    }

    fn switch_ids(&mut self, uid: u32, gid: u32) -> Result<(), JailError> {
        let err = |step| {
            move |source| JailError::Ids {
                uid,
                gid,
                step,
                source,
            }
        };
        let (u, g) = (Uid::from_raw(uid), Gid::from_raw(gid));
        nix::unistd::setgroups(&[]).map_err(err("setgroups"))?;
        nix::unistd::setresgid(g, g, g).map_err(err("setresgid"))?;
        nix::unistd::setresuid(u, u, u).map_err(err("setresuid"))?;
        let r = nix::unistd::getresuid().map_err(err("getresuid"))?;
        let rg = nix::unistd::getresgid().map_err(err("getresgid"))?;
        if [r.real, r.effective, r.saved] != [u, u, u]
            || [rg.real, rg.effective, rg.saved] != [g, g, g]
        {
            return Err(JailError::IdsVerify(format!("uids {r:?} gids {rg:?}")));
        }
        if !nix::unistd::getgroups()
            .map_err(err("getgroups"))?
            .is_empty()
        {
            return Err(JailError::IdsVerify("supplementary groups remain".into()));
        }
        Ok(())
    }

    fn clear_caps(&mut self) -> Result<(), JailError> {
        use caps::CapSet::*;
        // Effective must stay a subset of permitted, so it goes first.
        for set in [Ambient, Inheritable, Effective, Permitted] {
            caps::clear(None, set).map_err(JailError::Caps)?;
        }
        for (set, name) in [
            (Ambient, "ambient"),
            (Inheritable, "inheritable"),
            (Effective, "effective"),
            (Permitted, "permitted"),
        ] {
            if !caps::read(None, set).map_err(JailError::Caps)?.is_empty() {
                return Err(JailError::CapsVerify(name));
            }
        }
        Ok(())
    }

    fn close_fds(&mut self, keep: &[RawFd]) -> Result<(), JailError> {
        let mut keep: Vec<u32> = keep
            .iter()
            .filter(|&&f| f >= 0)
            .map(|&f| f as u32)
            .collect();
        keep.extend([0, 1, 2]);
        // The prepared landlock ruleset is an fd too; step 8 still needs it.
        for entry in std::fs::read_dir("/proc/self/fd").map_err(JailError::CloseFds)? {
            let entry = entry.map_err(JailError::CloseFds)?;
            let Ok(n) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Ok(target) = std::fs::read_link(entry.path())
                && target.to_string_lossy().contains("landlock-ruleset")
            {
                keep.push(n);
            }
        }
        keep.sort_unstable();
        keep.dedup();
        let mut next = 0u32;
        for &k in &keep {
            if k > next {
                sys::close_range(next, k - 1).map_err(JailError::CloseFds)?;
            }
            next = k + 1;
        }
        sys::close_range(next, u32::MAX).map_err(JailError::CloseFds)
    }

    fn no_new_privs(&mut self) -> Result<(), JailError> {
        nix::sys::prctl::set_no_new_privs().map_err(JailError::NoNewPrivs)
    }

    fn restrict_landlock(&mut self, mode: LandlockMode) -> Result<(LandlockState, i32), JailError> {
        let Some(ruleset) = self.ruleset.take() else {
            // prepare_landlock refused already when landlock is required.
            debug_assert!(self.landlock_missing.is_some() || mode == LandlockMode::BestEffort);
            return Ok((LandlockState::NotEnforced, 0));
        };
        let status = ruleset.restrict_self()?;
        let state = match status.ruleset {
            RulesetStatus::FullyEnforced => LandlockState::FullyEnforced,
            RulesetStatus::PartiallyEnforced => LandlockState::PartiallyEnforced,
            RulesetStatus::NotEnforced => LandlockState::NotEnforced,
        };
        if mode == LandlockMode::Required && state != LandlockState::FullyEnforced {
            return Err(JailError::LandlockNotFull(status.ruleset));
        }
        Ok((state, self.abi))
    }

    fn load_seccomp(&mut self, groups: SyscallGroups, mode: SeccompMode) -> Result<(), JailError> {
        let programs = seccomp::compile(groups, mode)?;
        seccomp::load(&programs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the steps instead of performing them.
    struct Recording {
        root: bool,
        steps: Vec<String>,
    }

    impl JailOps for Recording {
        fn is_root(&self) -> bool {
            self.root
        }
        fn unshare_net(&mut self, as_root: bool) -> Result<NetnsState, JailError> {
            self.steps.push(format!("netns(root={as_root})"));
            Ok(NetnsState::Private)
        }
        fn prepare_landlock(&mut self, spec: &JailSpec) -> Result<(), JailError> {
            self.steps
                .push(format!("landlock_prepare({})", spec.fs_rules.len()));
            Ok(())
        }
        fn clear_bounding(&mut self, _: bool) -> Result<(), JailError> {
            self.steps.push("bounding".into());
            Ok(())
        }
        fn switch_ids(&mut self, uid: u32, gid: u32) -> Result<(), JailError> {
            self.steps.push(format!("ids({uid},{gid})"));
            Ok(())
        }
        fn clear_caps(&mut self) -> Result<(), JailError> {
            self.steps.push("caps".into());
            Ok(())
        }
        fn close_fds(&mut self, keep: &[RawFd]) -> Result<(), JailError> {
            self.steps.push(format!("close_fds({keep:?})"));
            Ok(())
        }
        fn no_new_privs(&mut self) -> Result<(), JailError> {
            self.steps.push("nnp".into());
            Ok(())
        }
        fn restrict_landlock(
            &mut self,
            _: LandlockMode,
        ) -> Result<(LandlockState, i32), JailError> {
            self.steps.push("landlock_restrict".into());
            Ok((LandlockState::FullyEnforced, 7))
        }
        fn load_seccomp(&mut self, _: SyscallGroups, _: SeccompMode) -> Result<(), JailError> {
            self.steps.push("seccomp".into());
            Ok(())
        }
    }

    fn spec(network: Network) -> JailSpec {
        JailSpec {
            role: "smtpd".into(),
            ids: Some((60202, 60202)),
            network,
            fs_rules: vec![],
            keep_fds: vec![3, 4],
            syscalls: SyscallGroups::BASE,
            landlock: LandlockMode::Required,
            seccomp: SeccompMode::Errno,
        }
    }

    #[test]
    fn root_order_is_fixed() {
        let mut ops = Recording {
            root: true,
            steps: vec![],
        };
        let report = enter_with(&mut ops, &spec(Network::None)).unwrap();
        assert_eq!(
            ops.steps,
            [
                "netns(root=true)",
                "landlock_prepare(0)",
                "bounding",
                "ids(60202,60202)",
                "caps",
                "close_fds([3, 4])",
                "nnp",
                "landlock_restrict",
                "seccomp"
            ]
        );
        assert!(report.ids_switched);
    }

    #[test]
    fn non_root_skips_only_the_uid_switch() {
        let mut ops = Recording {
            root: false,
            steps: vec![],
        };
        let report = enter_with(&mut ops, &spec(Network::None)).unwrap();
        assert!(!ops.steps.iter().any(|s| s.starts_with("ids")));
        assert_eq!(ops.steps.len(), 8);
        assert!(!report.ids_switched);
    }

    #[test]
    fn network_roles_keep_the_host_namespace() {
        let mut ops = Recording {
            root: true,
            steps: vec![],
        };
        let report = enter_with(
            &mut ops,
            &spec(Network::Outbound {
                tcp_ports: Some(vec![25]),
            }),
        )
        .unwrap();
        assert_eq!(report.netns, NetnsState::Shared);
        assert_eq!(ops.steps[0], "landlock_prepare(0)");
    }
}
