//! Replays the fuzz corpus and the regression inputs of the proto targets
//! (fuzz/corpus/TARGET, fuzz/regressions/TARGET) through the same entry
//! points the cargo-fuzz targets call, on stable, in every test run.
use std::path::Path;

use postern_proto::fuzzing;

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
fn smtp_command() {
    replay("smtp_command", fuzzing::smtp_command);
}

#[test]
fn smtp_reply() {
    replay("smtp_reply", fuzzing::smtp_reply);
}

#[test]
fn data_stream() {
    replay("data_stream", fuzzing::data_stream);
}

#[test]
fn message_header() {
    replay("message_header", fuzzing::message_header);
}

#[test]
fn address() {
    replay("address", fuzzing::address);
}

#[test]
fn header_addresses() {
    replay("header_addresses", fuzzing::header_addresses);
}

#[test]
fn queue_record() {
    replay("queue_record", fuzzing::queue_records);
}

#[test]
fn smtp_session() {
    replay("smtp_session", fuzzing::smtp_session);
}

#[test]
fn table_reply() {
    replay("table_reply", fuzzing::table_reply);
}

#[test]
fn state_file() {
    replay("state_file", fuzzing::state_file);
}

#[test]
fn mime_walk() {
    replay("mime_walk", fuzzing::mime_walk);
}

#[test]
fn ccert() {
    replay("ccert", fuzzing::ccert);
}

#[test]
fn http_request() {
    replay("http_request", fuzzing::http_request);
}

#[test]
fn milter_reply() {
    replay("milter_reply", fuzzing::milter_reply);
}

#[test]
fn proxy_header() {
    replay("proxy_header", fuzzing::proxy_header);
}

#[test]
fn policy_reply() {
    replay("policy_reply", fuzzing::policy_reply);
}

#[test]
fn auth_message() {
    replay("auth_message", fuzzing::auth_message);
}

#[test]
fn auth_record() {
    replay("auth_record", fuzzing::auth_record);
}

#[test]
fn screen_session() {
    replay("screen_session", fuzzing::screen_session);
}

#[test]
fn mta_sts() {
    replay("mta_sts", fuzzing::mta_sts);
}
