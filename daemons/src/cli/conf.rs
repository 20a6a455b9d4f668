//! `postern conf`, after postconf(1): effective values, `-n` non-defaults,
//! `-d` defaults, `-x` expanded, and `--check` with every problem reported.
use std::process::ExitCode;

use postern_config::{Config, expand, registry};

pub struct ConfArgs {
    pub non_default: bool,
    pub defaults: bool,
    pub expand: bool,
    pub check: bool,
    pub names: Vec<String>,
}

pub fn run(cfg: &Config, a: &ConfArgs) -> ExitCode {
    if a.check {
        for d in &cfg.diagnostics {
            eprintln!("postern: {d}");
        }
        let errors = cfg.errors().count();
        let warnings = cfg.diagnostics.len() - errors;
        if errors > 0 {
            eprintln!(
                "postern: {errors} error(s), {warnings} warning(s): the configuration is not usable"
            );
            return ExitCode::FAILURE;
        }
        println!(
            "{}, {}: OK ({warnings} warning(s))",
            cfg.main_name, cfg.master_name
        );
        return ExitCode::SUCCESS;
    }
    for d in &cfg.diagnostics {
        eprintln!("postern: {d}");
    }
    let value_of = |name: &str| -> Option<String> {
        let def = registry::lookup(name);
        let raw = if a.defaults {
            def.map(|d| cfg.default_value(d))
                .or_else(|| (name == "mydomain").then(|| cfg.raw(name)).flatten())
        } else {
            cfg.raw(name).or_else(|| {
                cfg.settings()
                    .find(|(n, _)| *n == name)
                    .map(|(_, s)| s.value.clone())
            })
        }?;
        if a.expand {
            Some(
                expand(&raw, &|n| {
                    cfg.raw(n).or_else(|| {
                        cfg.settings()
                            .find(|(k, _)| *k == n)
                            .map(|(_, s)| s.value.clone())
                    })
                })
                .unwrap_or(raw),
            )
        } else {
            Some(raw)
        }
    };
    let mut status = ExitCode::SUCCESS;
    let names: Vec<String> = if !a.names.is_empty() {
        a.names.clone()
    } else if a.non_default {
        cfg.settings().map(|(n, _)| n.clone()).collect()
    } else {
        registry::PARAMS
            .iter()
            .map(|d| d.name.to_string())
            .collect()
    };
    for n in names {
        if a.non_default && !cfg.settings().any(|(k, _)| *k == n) {
            continue;
        }
        match value_of(&n) {
            Some(v) if v.is_empty() => println!("{n} ="),
            Some(v) => println!("{n} = {v}"),
            None => {
                eprintln!("postern: warning: {n}: unknown parameter");
                status = ExitCode::FAILURE;
            }
        }
    }
    status
}
