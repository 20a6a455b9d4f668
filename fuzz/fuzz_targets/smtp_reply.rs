//! A server's replies, as the SMTP client assembles them.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    postern_proto::fuzzing::smtp_reply(data);
});
