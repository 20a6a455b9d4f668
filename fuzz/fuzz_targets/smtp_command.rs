//! An SMTP command line, and the MAIL/RCPT paths under both address grammars.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    postern_proto::fuzzing::smtp_command(data);
});
