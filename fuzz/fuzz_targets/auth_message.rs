//! A message as the authentication checks read it: its DKIM signatures and
//! ARC sets, and the key records they lead to.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    postern_proto::fuzzing::auth_message(data);
});
