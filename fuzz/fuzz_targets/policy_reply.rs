//! A policy server's reply, as the policy client reads it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    postern_proto::fuzzing::policy_reply(data);
});
