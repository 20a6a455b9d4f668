//! Entry points shared by the fuzz targets in `fuzz/` (cargo-fuzz, nightly)
//! and the corpus-replay tests that run on stable (`tests/fuzz_replay.rs`).
//! The configuration is trusted, but an operator's typo must give a message
//! with file and line, never a panic or a hang.
use std::path::PathBuf;

use crate::tables::{self, Format, Rules, Table, cdb, parse_source};
use crate::{Config, EMBEDDED_MASTER_CF};

/// main.cf and master.cf (split at the first NUL; without one, the
/// embedded master.cf): every diagnostic names one of the two files and a
/// line inside it (or a default value that expands a bad setting), and every typed accessor answers.
pub fn config_files(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (main, master) = text.split_once('\0').unwrap_or((&text, ""));
    let embedded = master.is_empty();
    let master = if embedded { EMBEDDED_MASTER_CF } else { master };
    let cfg = Config::from_texts(
        None,
        "main.cf",
        main,
        "master.cf",
        master,
        embedded,
        PathBuf::from("/"),
        Vec::new(),
    );
    for d in &cfg.diagnostics {
        let lines = match d.file.as_str() {
            "main.cf" => main.lines().count(),
            "master.cf" => master.lines().count(),
            // A default value that expands a bad setting (mydestination's
            // default names $myhostname): reported for the default, no line.
            "(default)" => {
                assert_eq!(d.line, None, "{d:?}");
                continue;
            }
            other => panic!("a diagnostic for {other}: {d:?}"),
        };
        if let Some(l) = d.line {
            assert!(l >= 1 && l <= lines.max(1), "{d:?} outside 1..={lines}");
        }
    }
    if let Ok(p) = cfg.params() {
        let names: Vec<String> = p.iter().map(|(k, _)| k.clone()).collect();
        for n in &names {
            let _ = (p.bool(n), p.int(n), p.duration(n), p.size(n), p.list(n));
            for t in p.list(n).unwrap_or_default() {
                let _ = tables::parse(&t);
            }
        }
        let _ = tables::configured_files(&p);
    }
}

/// Lookup tables: the first byte picks what to parse.
/// - 0: a `type:name` reference;
/// - 1: a table file in each format (texthash, passwd, cidr, regexp,
///   pcre), the first line being the key;
/// - 2: a postmap/postalias source, built into cdb, where every key must
///   then be found with its first value;
/// - 3: a cdb image read with a key (the first 8 bytes).
pub fn table_files(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match sel % 4 {
        0 => {
            if let Ok(t) = tables::parse(&text) {
                let _ = t.file();
                if t.files().is_empty() {
                    let _ = t.lookup_with("key", &mut |_, _| Err("no files".into()));
                }
            }
        }
        1 => {
            let (key, body) = text.split_once('\n').unwrap_or(("", &text));
            for (t, f) in [
                (Table::TextHash("/t".into()), Format::TextHash),
                (Table::Passwd, Format::Passwd),
                (Table::Cidr(Rules::File("/t".into())), Format::Cidr),
                (Table::Regexp(Rules::File("/t".into())), Format::Regexp),
                (Table::Pcre(Rules::File("/t".into())), Format::Pcre),
            ] {
                if let Ok(l) = tables::load(f, body.as_bytes().to_vec(), "t") {
                    let l = std::sync::Arc::new(l);
                    let _ = t.lookup_with(key, &mut |_, _| Ok(l.clone()));
                }
            }
        }
        2 => {
            for aliases in [false, true] {
                let Ok(pairs) = parse_source(&text, "source", aliases) else {
                    continue;
                };
                let bytes: Vec<(Vec<u8>, Vec<u8>)> = pairs
                    .iter()
                    .map(|(k, v)| (k.clone().into_bytes(), v.clone().into_bytes()))
                    .collect();
                let img = cdb::build(&bytes);
                for (k, _) in &bytes {
                    let first = bytes.iter().find(|(k2, _)| k2 == k).map(|(_, v)| v);
                    let got = cdb::get(&img, k).expect("a built image reads back");
                    assert_eq!(got, first.map(Vec::as_slice), "key {k:?}");
                }
            }
        }
        _ => {
            let (key, img) = rest.split_at(rest.len().min(8));
            let _ = cdb::get(img, key);
        }
    }
}
