//! A maildrop file written by sendmail: its frames and their messages.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    postern_ipc::fuzzing::maildrop_file(data);
});
