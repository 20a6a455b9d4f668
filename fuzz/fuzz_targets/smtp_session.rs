//! The SMTP session core driven by sequences of commands, content,
//! transport events and peer answers (see `postern_proto::fuzzing::smtp_session`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    postern_proto::fuzzing::smtp_session(data);
});
