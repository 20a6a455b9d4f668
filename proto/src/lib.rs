//! Sans-IO grammar for every untrusted byte Postern parses: SMTP commands,
//! the DATA/BDAT stream, addresses, message headers, and queue-file records.
//! No I/O, no async runtime: everything here is a pure function or a state
//! machine fed with bytes, so it can be fuzzed and tested in isolation.
#![forbid(unsafe_code)]

pub mod address;
pub mod addrlist;
pub mod auth;
pub mod ccert;
pub mod fuzzing;
pub mod header;
pub mod http;
pub mod milter;
pub mod mime;
pub mod mtasts;
pub mod policy;
pub mod proxy;
pub mod queue;
pub mod screen;
pub mod smtp;
pub mod statefile;
pub mod tablemap;
pub mod tlsrpt;
