//! main.cf and master.cf: diagnostics name a file and a line in it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    postern_config::fuzzing::config_files(data);
});
