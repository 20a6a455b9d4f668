//! postscreen's SMTP engine after the greeting, as a spambot drives it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    postern_proto::fuzzing::screen_session(data);
});
