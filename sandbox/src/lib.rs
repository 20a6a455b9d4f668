//! Postern's sandbox: the one crate that may contain `unsafe`.
//!
//! Every daemon calls [`jail::enter`] at the top of `main`, before any thread
//! or async runtime exists and before it reads a byte of untrusted input.
//! Raw system calls live in [`sys`], each behind a small safe function with a
//! `// SAFETY:` comment; everything else here uses safe wrappers (nix, caps,
//! landlock, seccompiler).
#![deny(unsafe_op_in_unsafe_fn)]

pub mod error;
pub mod fdpass;
pub mod jail;
pub mod procstat;
pub mod seccomp;
pub mod sys;

pub use error::JailError;
pub use jail::{
    FsAccess, FsRule, JailReport, JailSpec, LandlockMode, LandlockState, NetnsState, Network,
};
pub use seccomp::{SeccompMode, SyscallGroups};
