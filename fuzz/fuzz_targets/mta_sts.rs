//! MTA-STS and TLS-RPT records and policy files, as hostile DNS and HTTPS
//! servers send them.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    postern_proto::fuzzing::mta_sts(data);
});
