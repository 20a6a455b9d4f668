//! The addresses in a header value: spans in order, and rewriting keeps
//! the rest of the value.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    postern_proto::fuzzing::header_addresses(data);
});
