//! Lookup speed of the table types (a benchmark, not a test; results in
//! bench/README.md). Run with `bench/run.sh tables`, or
//! `cargo run --release -p postern-config --example table_bench`.
//!
//! - a cdb table of 100,000 keys, a texthash table of 100,000 lines and a
//!   cidr table of 100,000 networks (the cidr table is searched in order,
//!   so a miss reads every rule, as in Postfix);
//! - a regexp table and a pcre table of 1,000 patterns, looked up with a
//!   key that matches none (the worst case: every pattern is tried);
//! - hostile keys of 1 KB to 100 KB against patterns that take
//!   exponential time in a backtracking engine.
use std::sync::Arc;
use std::time::{Duration, Instant};

use postern_config::tables::{self, Format, Loaded, Rules, Table};

/// Median time of one lookup over `rounds` rounds of `n` lookups.
fn time(n: usize, rounds: usize, mut f: impl FnMut(usize)) -> Duration {
    let mut per = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        for i in 0..n {
            f(i);
        }
        per.push(t.elapsed() / n as u32);
    }
    per.sort();
    per[rounds / 2]
}

fn lookup(t: &Table, loaded: &Arc<Loaded>, key: &str) -> Option<String> {
    t.lookup_with(key, &mut |_, _| Ok(loaded.clone()))
        .expect("lookup")
}

fn show(what: &str, d: Duration) {
    println!("| {what} | {:.1} µs |", d.as_secs_f64() * 1e6);
}

fn main() {
    println!("| table | median time per lookup |\n|---|---|");
    let n = 100_000;
    // cdb, built as `postern map build` builds it.
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..n)
        .map(|i| (format!("user{i}@example.com").into_bytes(), b"OK".to_vec()))
        .collect();
    let image = tables::cdb::build(&pairs);
    let cdb = Arc::new(tables::load(Format::Cdb, image, "bench.cdb").expect("cdb"));
    let t = Table::Cdb("/bench".into());
    show(
        "cdb, 100,000 keys, hits",
        time(10_000, 5, |i| {
            assert!(lookup(&t, &cdb, &format!("user{}@example.com", i * 7 % n)).is_some())
        }),
    );
    show(
        "cdb, 100,000 keys, misses",
        time(10_000, 5, |i| {
            assert!(lookup(&t, &cdb, &format!("nobody{i}@example.com")).is_none())
        }),
    );
    // texthash: the same keys as source text.
    let text: String = (0..n)
        .map(|i| format!("user{i}@example.com OK\n"))
        .collect();
    let th =
        Arc::new(tables::load(Format::TextHash, text.into_bytes(), "bench").expect("texthash"));
    let t = Table::TextHash("/bench".into());
    show(
        "texthash, 100,000 lines",
        time(10_000, 5, |i| {
            assert!(lookup(&t, &th, &format!("USER{}@example.com", i * 7 % n)).is_some())
        }),
    );
    // cidr: 100,000 /32 networks, in order.
    let text: String = (0..n)
        .map(|i| format!("10.{}.{}.{} REJECT\n", i >> 16, (i >> 8) & 255, i & 255))
        .collect();
    let load_start = Instant::now();
    let cidr = Arc::new(tables::load(Format::Cidr, text.into_bytes(), "bench.cidr").expect("cidr"));
    let load = load_start.elapsed();
    let t = Table::Cidr(Rules::File("/bench.cidr".into()));
    show(
        "cidr, 100,000 rules, a miss (every rule tried)",
        time(200, 5, |_| {
            assert!(lookup(&t, &cidr, "192.0.2.1").is_none())
        }),
    );
    println!(
        "\n(cidr table of 100,000 lines parsed in {:.0} ms)\n",
        load.as_secs_f64() * 1e3
    );
    // 1,000 patterns, none matching the key.
    for (format, name) in [(Format::Regexp, "regexp"), (Format::Pcre, "pcre")] {
        let text: String = (0..1000)
            .map(|i| {
                format!(
                    "/^user{i}[._-]?[a-z]+@(sub[0-9]+\\.)?example{i}\\.(com|net)$/ REJECT {i}\n"
                )
            })
            .collect();
        let t0 = Instant::now();
        let l = Arc::new(tables::load(format, text.into_bytes(), "bench").expect("patterns"));
        let compile = t0.elapsed();
        let t = match format {
            Format::Regexp => Table::Regexp(Rules::File("/bench".into())),
            _ => Table::Pcre(Rules::File("/bench".into())),
        };
        show(
            &format!("{name}, 1,000 patterns, a miss (every pattern tried)"),
            time(200, 5, |_| {
                assert!(lookup(&t, &l, "someone.else@example.org").is_none())
            }),
        );
        show(
            &format!("{name}, 1,000 patterns, a hit on the last"),
            time(200, 5, |_| {
                assert!(lookup(&t, &l, "user999x@example999.net").is_some())
            }),
        );
        println!(
            "\n({name} table of 1,000 patterns compiled in {:.0} ms)\n",
            compile.as_secs_f64() * 1e3
        );
    }
    // Hostile keys: catastrophic for backtracking engines.
    println!("| hostile key | /^(a+)+$/ | /(x+x+)+y/ | /^(a|a?)+b$/ (pcre) |\n|---|---|---|---|");
    let t = Table::Pcre(Rules::File("/h".into()));
    let pats = ["/^(a+)+$/ x\n", "/(x+x+)+y/ y\n", "/^(a|a?)+b$/ z\n"];
    let loaded: Vec<Arc<Loaded>> = pats
        .iter()
        .map(|p| Arc::new(tables::load(Format::Pcre, p.as_bytes().to_vec(), "h").expect("pattern")))
        .collect();
    for size in [1_000, 10_000, 100_000] {
        let keys = ["a".repeat(size) + "!", "x".repeat(size), "a".repeat(size)];
        let cells: Vec<String> = loaded
            .iter()
            .zip(&keys)
            .map(|(l, k)| {
                let d = time(3, 3, |_| assert!(lookup(&t, l, k).is_none()));
                format!("{:.2} ms", d.as_secs_f64() * 1e3)
            })
            .collect();
        println!("| {} KB | {} |", size / 1000, cells.join(" | "));
    }
}
