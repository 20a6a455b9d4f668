//! Lookup tables: references, texthash, postmap sources built into cdb, cdb images.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    postern_config::fuzzing::table_files(data);
});
