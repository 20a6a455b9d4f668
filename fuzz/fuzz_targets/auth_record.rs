//! A TXT record as an SPF record, a DKIM key and a DMARC policy, and the
//! questions an SPF record leads to.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    postern_proto::fuzzing::auth_record(data);
});
