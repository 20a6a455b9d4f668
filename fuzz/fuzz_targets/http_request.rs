//! An HTTP request head as the metrics endpoint reads it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    postern_proto::fuzzing::http_request(data);
});
