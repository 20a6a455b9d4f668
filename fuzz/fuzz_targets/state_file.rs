//! The state store's namespace files, as read back after a restart.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    postern_proto::fuzzing::state_file(data);
});
