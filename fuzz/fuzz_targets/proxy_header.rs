//! A PROXY protocol header, as smtpd reads it before the session.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    postern_proto::fuzzing::proxy_header(data);
});
