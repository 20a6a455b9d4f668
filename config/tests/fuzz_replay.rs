//! Replays the fuzz corpus and the regression inputs of the configuration targets
//! (fuzz/corpus/TARGET, fuzz/regressions/TARGET) through the same entry
//! points the cargo-fuzz targets call, on stable, in every test run.
use std::path::Path;

use postern_config::fuzzing;

fn replay(target: &str, f: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut n = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(rd) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in rd.flatten() {
            let data = std::fs::read(e.path()).unwrap();
            let r = std::panic::catch_unwind(|| f(&data));
            assert!(r.is_ok(), "{target}: {} fails", e.path().display());
            n += 1;
        }
    }
    assert!(n > 0, "no corpus for {target} under fuzz/");
}

#[test]
fn config_files() {
    replay("config_files", fuzzing::config_files);
}

#[test]
fn table_files() {
    replay("table_files", fuzzing::table_files);
}
