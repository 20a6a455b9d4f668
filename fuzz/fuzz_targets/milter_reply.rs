//! A Milter's replies, as the Milter client reads them.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    postern_proto::fuzzing::milter_reply(data);
});
