//! Replies of external table servers (tcp_table, socketmap).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    postern_proto::fuzzing::table_reply(data);
});
