//! SMTP (RFC 5321) grammar: command lines, replies, and the DATA stream.
pub mod command;
pub mod data;
pub mod esmtp;
pub mod reply;
pub mod server;

pub use command::{Command, EsmtpParam, parse_command};
pub use data::{BareLf, DataDecoder, LineNormalizer, Progress};
pub use reply::{Reply, ReplyError, ReplyParser};
