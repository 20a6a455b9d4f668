//! One error variant per jail step, so an operator sees which step failed.
use std::io;

#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("cannot create a private network namespace: {0}")]
    Netns(#[source] nix::Error),
    #[error(
        "landlock is not available on this kernel ({0}); the daemon refuses to start. Set landlock_enforcement = best_effort to run without it"
    )]
    LandlockUnavailable(String),
    #[error("landlock ruleset: {0}")]
    Landlock(#[from] landlock::RulesetError),
    #[error("landlock rule for {path}: {source}")]
    LandlockPath {
        path: String,
        #[source]
        source: landlock::RulesetError,
    },
    #[error("cannot open {path} for a landlock rule: {source}")]
    LandlockOpen {
        path: String,
        #[source]
        source: landlock::PathFdError,
    },
    #[error("landlock was only {0:?} on this kernel, and landlock_enforcement = required")]
    LandlockNotFull(landlock::RulesetStatus),
    #[error("cannot clear the bounding capability set: {0}")]
    Bounding(#[source] caps::errors::CapsError),
    #[error("cannot switch to uid {uid} gid {gid}: {step}: {source}")]
    Ids {
        uid: u32,
        gid: u32,
        step: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("uid/gid switch did not stick: {0}")]
    IdsVerify(String),
    #[error("cannot clear capabilities: {0}")]
    Caps(#[source] caps::errors::CapsError),
    #[error("capability set {0} is not empty after clearing")]
    CapsVerify(&'static str),
    #[error("cannot close inherited file descriptors: {0}")]
    CloseFds(#[source] io::Error),
    #[error("cannot set no_new_privs: {0}")]
    NoNewPrivs(#[source] nix::Error),
    #[error("cannot build the seccomp filter: {0}")]
    SeccompBuild(#[source] seccompiler::BackendError),
    #[error("cannot load the seccomp filter: {0}")]
    SeccompLoad(#[source] seccompiler::Error),
}
