//! Queue-file records: the framed decoder and postcard payloads; records re-encode.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    postern_proto::fuzzing::queue_records(data);
});
