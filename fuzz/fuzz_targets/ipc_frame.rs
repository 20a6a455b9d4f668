//! Every IPC message decoder on arbitrary bytes: no panic, and whatever
//! decodes re-encodes to the same value.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    postern_ipc::fuzzing::decode_any(data);
});
