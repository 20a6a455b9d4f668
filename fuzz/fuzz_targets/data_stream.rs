//! The DATA decoder and the BDAT normalizer: chunking never changes the result; no smuggled end of data.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    postern_proto::fuzzing::data_stream(data);
});
