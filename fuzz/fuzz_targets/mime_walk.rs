//! The MIME walker of content inspection: a Content-Type line, then a body.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    postern_proto::fuzzing::mime_walk(data);
});
