//! Postfix-syntax configuration for Postern.
//!
//! `main.cf` holds `name = value` parameters with Postfix's names; `master.cf`
//! lists services. Loading never stops at the first problem: every error and
//! warning is collected with its file and line, for `postern conf --check`.
#![forbid(unsafe_code)]

mod check;
pub mod cidr;
pub mod dkim;
mod expand;
pub mod fuzzing;
pub mod inet;
mod lines;
pub mod masterfile;
pub mod milter;
mod params;
pub mod policy;
pub mod postscreen;
pub mod registry;
pub mod restrictions;
mod role;
pub mod sasl;
pub mod tables;
pub mod tlsproto;
pub mod value;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub use expand::{ExpandError, expand};
pub use masterfile::{EMBEDDED_MASTER_CF, Listen, Override, Service, ServiceType};
pub use params::{ParamError, Params};
pub use registry::{Kind, ParamDef};
pub use role::Role;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// Parameters a daemon reads once before its jail, for all its services:
/// a master.cf -o override of one could not take effect, so it is refused.
const MAIN_CF_ONLY: &[&str] = &["smtpd_tls_CAfile"];

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

impl Diagnostic {
    pub fn error(file: &str, line: Option<usize>, message: String) -> Self {
        Self {
            severity: Severity::Error,
            file: file.to_string(),
            line,
            message,
        }
    }
    pub fn warning(file: &str, line: Option<usize>, message: String) -> Self {
        Self {
            severity: Severity::Warning,
            file: file.to_string(),
            line,
            message,
        }
    }
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match self.line {
            Some(l) => write!(f, "{}:{}: {}: {}", self.file, l, sev, self.message),
            None => write!(f, "{}: {}: {}", self.file, sev, self.message),
        }
    }
}

/// A main.cf setting and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub value: String,
    pub line: usize,
}

/// A loaded configuration: main.cf settings, master.cf services, and every
/// problem found while loading.
#[derive(Debug, Clone)]
pub struct Config {
    pub config_dir: Option<PathBuf>,
    /// Display name of main.cf ("main.cf (embedded)" when there is none).
    pub main_name: String,
    pub master_name: String,
    pub master_embedded: bool,
    settings: BTreeMap<String, Setting>,
    computed: BTreeMap<&'static str, String>,
    pub services: Vec<Service>,
    pub diagnostics: Vec<Diagnostic>,
    /// Directory relative Path parameters are resolved against.
    base_dir: PathBuf,
}

fn system_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

impl Config {
    /// Loads `DIR/main.cf` and `DIR/master.cf` (the embedded master.cf when
    /// that file does not exist). With no directory, everything is embedded.
    pub fn load(config_dir: Option<&Path>) -> Config {
        let base = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let mut main_text = String::new();
        let mut master_text = EMBEDDED_MASTER_CF.to_string();
        let mut diags = Vec::new();
        let (mut main_name, mut master_name, mut master_embedded) = (
            "main.cf (embedded)".to_string(),
            "master.cf (embedded)".to_string(),
            true,
        );
        if let Some(dir) = config_dir {
            let main = dir.join("main.cf");
            main_name = main.display().to_string();
            match read_capped(&main, CONFIG_FILE_CAP) {
                Ok(t) => main_text = t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    diags.push(Diagnostic::error(&main_name, None, "no such file".into()))
                }
                Err(e) => diags.push(Diagnostic::error(
                    &main_name,
                    None,
                    format!("cannot read: {e}"),
                )),
            }
            let master = dir.join("master.cf");
            match read_capped(&master, CONFIG_FILE_CAP) {
                Ok(t) => {
                    master_text = t;
                    master_name = master.display().to_string();
                    master_embedded = false;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => diags.push(Diagnostic::error(
                    &master.display().to_string(),
                    None,
                    format!("cannot read: {e}"),
                )),
            }
        }
        Self::from_texts(
            config_dir,
            &main_name,
            &main_text,
            &master_name,
            &master_text,
            master_embedded,
            base,
            diags,
        )
    }

    /// Builds a configuration from file contents (for tests and for `load`).
    #[allow(clippy::too_many_arguments)]
    pub fn from_texts(
        config_dir: Option<&Path>,
        main_name: &str,
        main_text: &str,
        master_name: &str,
        master_text: &str,
        master_embedded: bool,
        base_dir: PathBuf,
        mut diags: Vec<Diagnostic>,
    ) -> Config {
        let settings = parse_main(main_text, main_name, &mut diags);
        let services = masterfile::parse(master_text, master_name, &mut diags);
        let mut computed = BTreeMap::new();
        computed.insert("myhostname", system_hostname());
        computed.insert(
            "config_directory",
            match config_dir {
                Some(d) => d.display().to_string(),
                None => "${data_directory}".into(),
            },
        );
        let mut cfg = Config {
            config_dir: config_dir.map(Path::to_path_buf),
            main_name: main_name.to_string(),
            master_name: master_name.to_string(),
            master_embedded,
            settings,
            computed,
            services,
            diagnostics: diags,
            base_dir,
        };
        let maps = cfg.access_maps();
        cfg.computed.insert("postern_access_maps", maps.join(", "));
        let services = cfg.policy_services();
        cfg.computed
            .insert("postern_policy_services", services.join(", "));
        // The postscreen services of master.cf: the postscreen role runs
        // only when there is one.
        let screens: Vec<String> = cfg
            .services
            .iter()
            .filter(|s| s.role == Some(Role::Postscreen))
            .map(|s| s.name.clone())
            .collect();
        cfg.computed
            .insert("postern_postscreen_services", screens.join(", "));
        // Class definitions travel as "name {items} name {items}".
        let classes: Vec<String> = cfg
            .restriction_classes()
            .into_iter()
            .map(|(n, items)| format!("{n} {{{}}}", items.join(", ")))
            .collect();
        cfg.computed
            .insert("postern_restriction_classes", classes.join(" "));
        cfg.validate();
        cfg
    }

    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }

    /// The default (unexpanded) value of a registry parameter.
    pub fn default_value(&self, def: &ParamDef) -> String {
        self.computed
            .get(def.name)
            .cloned()
            .unwrap_or_else(|| def.default.to_string())
    }

    /// The raw value of `name`: main.cf, else the default; None if unknown.
    pub fn raw(&self, name: &str) -> Option<String> {
        let def = registry::lookup(name);
        if let Some(d) = def
            && d.read_only
        {
            return Some(self.default_value(d));
        }
        if let Some(s) = self.settings.get(name) {
            return Some(s.value.clone());
        }
        if name == "mydomain" && !self.settings.contains_key("mydomain") {
            // Postfix: the default domain is myhostname minus its first label.
            let host = self
                .raw("myhostname")
                .and_then(|h| {
                    expand(&h, &|n| if n == "mydomain" { None } else { self.raw(n) }).ok()
                })
                .unwrap_or_default();
            return Some(
                host.split_once('.')
                    .map(|(_, d)| d.to_string())
                    .filter(|d| !d.is_empty())
                    .unwrap_or_else(|| "localdomain".into()),
            );
        }
        def.map(|d| self.default_value(d))
    }

    /// main.cf settings in name order.
    pub fn settings(&self) -> impl Iterator<Item = (&String, &Setting)> {
        self.settings.iter()
    }

    /// Every parameter expanded for the global context (no -o overrides).
    pub fn params(&self) -> Result<Params, Vec<Diagnostic>> {
        self.params_with(&[])
    }

    /// Every parameter expanded, keeping values that fail their type check
    /// (for commands that only need to find the instance, like `status`).
    pub fn params_lenient(&self) -> Params {
        let mut errs = Vec::new();
        Params::new(self.expand_all(&[], &mut errs))
    }

    /// Every parameter expanded with a service's -o overrides applied.
    pub fn params_with(&self, overrides: &[Override]) -> Result<Params, Vec<Diagnostic>> {
        let mut errs = Vec::new();
        let map = self.expand_all(overrides, &mut errs);
        if errs.is_empty() {
            Ok(Params::new(map))
        } else {
            Err(errs)
        }
    }

    fn lookup_with<'a>(
        &'a self,
        overrides: &'a [Override],
    ) -> impl Fn(&str) -> Option<String> + 'a {
        move |n: &str| {
            let v = match overrides.iter().rev().find(|o| o.name == n) {
                Some(o) => Some(o.value.clone()),
                None => self.raw(n),
            }?;
            // A relative path expands as the absolute path it stands for, so
            // `${data_directory}/x` never turns relative.
            let relative = !v.is_empty() && !v.starts_with('/') && !v.starts_with('$');
            if relative && registry::lookup(n).is_some_and(|d| d.kind == Kind::Path) {
                return Some(self.base_dir.join(&v).display().to_string());
            }
            Some(v)
        }
    }

    /// Where a parameter's value comes from, for diagnostics.
    fn origin(&self, name: &str, overrides: &[Override]) -> (String, Option<usize>) {
        if let Some(o) = overrides.iter().rev().find(|o| o.name == name) {
            return (self.master_name.clone(), Some(o.line));
        }
        match self.settings.get(name) {
            Some(s) => (self.main_name.clone(), Some(s.line)),
            None => ("(default)".into(), None),
        }
    }

    fn expand_all(
        &self,
        overrides: &[Override],
        errs: &mut Vec<Diagnostic>,
    ) -> BTreeMap<String, String> {
        let get = self.lookup_with(overrides);
        let mut out = BTreeMap::new();
        for def in registry::PARAMS {
            let raw = get(def.name).unwrap_or_default();
            let (file, line) = self.origin(def.name, overrides);
            // Templates expanded where they are used, with names of their
            // own ($rbl_code, $rbl_domain, ...), as Postfix does.
            if registry::LATE_EXPANSION.contains(&def.name) {
                out.insert(def.name.to_string(), raw);
                continue;
            }
            match expand(&raw, &get) {
                Ok(v) => {
                    let v = match def.kind {
                        Kind::Path if !v.is_empty() && !v.starts_with('/') => {
                            self.base_dir.join(&v).display().to_string()
                        }
                        _ => v,
                    };
                    if let Err(m) = params::check_value(def, &v) {
                        errs.push(Diagnostic::error(
                            &file,
                            line,
                            format!("bad value for {}: \"{}\": {m}", def.name, v),
                        ));
                    }
                    out.insert(def.name.to_string(), v);
                }
                Err(e) => errs.push(Diagnostic::error(&file, line, format!("{}: {e}", def.name))),
            }
        }
        out
    }

    /// Checks every value in every context and warns about unknown names.
    /// (Parameters in [`MAIN_CF_ONLY`] are refused as -o overrides.)
    fn validate(&mut self) {
        let mut diags = Vec::new();
        // Names referenced anywhere make user-defined parameters legitimate.
        let mut referenced: BTreeSet<String> = BTreeSet::new();
        for s in self.settings.values() {
            referenced.extend(expand::references(&s.value));
        }
        for svc in &self.services {
            for o in &svc.overrides {
                referenced.extend(expand::references(&o.value));
            }
        }
        for def in registry::PARAMS {
            referenced.extend(expand::references(def.default));
        }
        // Restriction classes are parameters of the admin's own naming.
        if let Some(v) = self.settings.get("smtpd_restriction_classes") {
            referenced.extend(value::split_list(&v.value));
        }
        for (name, s) in &self.settings {
            match registry::lookup(name) {
                Some(d) if d.read_only => diags.push(Diagnostic::warning(
                    &self.main_name,
                    Some(s.line),
                    format!("{name} is read-only; the setting is ignored"),
                )),
                Some(_) => {}
                None => match Self::unsupported(name, &s.value) {
                    Some((true, m)) => {
                        diags.push(Diagnostic::error(&self.main_name, Some(s.line), m))
                    }
                    Some((false, m)) => {
                        diags.push(Diagnostic::warning(&self.main_name, Some(s.line), m))
                    }
                    None if referenced.contains(name) => {}
                    None => diags.push(Diagnostic::warning(
                        &self.main_name,
                        Some(s.line),
                        format!("unknown parameter: {name}={}", s.value),
                    )),
                },
            }
        }
        self.check_not_yet(&[], &mut diags);
        self.check_lists(&[], &mut diags);
        let mut seen = BTreeSet::new();
        let mut push = |d: Diagnostic, diags: &mut Vec<Diagnostic>| {
            if seen.insert((d.file.clone(), d.line, d.message.clone())) {
                diags.push(d);
            }
        };
        let mut errs = Vec::new();
        self.expand_all(&[], &mut errs);
        for e in errs {
            push(e, &mut diags);
        }
        for svc in &self.services {
            for o in &svc.overrides {
                if MAIN_CF_ONLY.contains(&o.name.as_str()) {
                    push(
                        Diagnostic::error(
                            &self.master_name,
                            Some(o.line),
                            format!(
                                "{}: Postern reads it once for every smtpd service; set it in main.cf",
                                o.name
                            ),
                        ),
                        &mut diags,
                    );
                    continue;
                }
                if registry::lookup(&o.name).is_some() || self.settings.contains_key(&o.name) {
                    continue;
                }
                let d = match Self::unsupported(&o.name, &o.value) {
                    Some((true, m)) => Diagnostic::error(&self.master_name, Some(o.line), m),
                    Some((false, m)) => Diagnostic::warning(&self.master_name, Some(o.line), m),
                    None => Diagnostic::warning(
                        &self.master_name,
                        Some(o.line),
                        format!("unknown parameter in -o: {}", o.name),
                    ),
                };
                push(d, &mut diags);
            }
            if svc.overrides.is_empty() {
                continue;
            }
            let mut more = Vec::new();
            self.check_not_yet(&svc.overrides, &mut more);
            self.check_lists(&svc.overrides, &mut more);
            for d in more {
                push(d, &mut diags);
            }
            let mut errs = Vec::new();
            self.expand_all(&svc.overrides, &mut errs);
            for e in errs {
                push(e, &mut diags);
            }
        }
        self.check_postscreen(&mut diags);
        let mut unique = BTreeSet::new();
        diags.retain(|d| unique.insert((d.file.clone(), d.line, d.message.clone())));
        self.diagnostics.extend(diags);
        self.diagnostics
            .sort_by(|a, b| (a.file.as_str(), a.line).cmp(&(b.file.as_str(), b.line)));
    }
}

impl Config {
    /// postscreen hands the clients it passes to the smtpd pass service
    /// `smtpd_service_name` names; a pass service with no postscreen in
    /// front of it is never used.
    fn check_postscreen(&self, diags: &mut Vec<Diagnostic>) {
        let name = self
            .expanded("smtpd_service_name", &[])
            .unwrap_or_else(|| "smtpd".into());
        let pass = |n: &str| {
            self.services
                .iter()
                .any(|s| s.kind == ServiceType::Pass && s.role == Some(Role::Smtpd) && s.name == n)
        };
        let mut screens = false;
        for s in self
            .services
            .iter()
            .filter(|s| s.role == Some(Role::Postscreen))
        {
            screens = true;
            // Its DNS lists and access list, as they apply to this service.
            let (file, line) = self.origin("postscreen_dnsbl_sites", &s.overrides);
            let sites = self
                .expanded("postscreen_dnsbl_sites", &s.overrides)
                .unwrap_or_default();
            if let Err(e) = postscreen::sites(&value::split_list(&sites)) {
                diags.push(Diagnostic::error(
                    &file,
                    line,
                    format!("postscreen_dnsbl_sites: {e}"),
                ));
            }
            let (file, line) = self.origin("postscreen_access_list", &s.overrides);
            let acl = self
                .expanded("postscreen_access_list", &s.overrides)
                .unwrap_or_default();
            for item in value::split_list(&acl) {
                if item != "permit_mynetworks" && tables::parse(&item).is_err() {
                    diags.push(Diagnostic::error(
                        &file,
                        line,
                        format!(
                            "postscreen_access_list: \"{item}\" is neither permit_mynetworks nor a table"
                        ),
                    ));
                }
            }
            let own = s
                .overrides
                .iter()
                .rev()
                .find(|o| o.name == "smtpd_service_name")
                .map_or(name.as_str(), |o| o.value.as_str());
            if !pass(own) {
                diags.push(Diagnostic::error(
                    &self.master_name,
                    Some(s.line),
                    format!(
                        "postscreen service \"{}\" hands clients to the smtpd pass service \"{own}\" (smtpd_service_name), and master.cf has none: add \"{own} pass - - n - - smtpd\"",
                        s.name
                    ),
                ));
            }
        }
        if !screens {
            for s in self
                .services
                .iter()
                .filter(|s| s.kind == ServiceType::Pass && s.role == Some(Role::Smtpd))
            {
                diags.push(Diagnostic::warning(
                    &self.master_name,
                    Some(s.line),
                    format!(
                        "pass service \"{}\" has no postscreen service in front of it; it receives no clients",
                        s.name
                    ),
                ));
            }
        }
    }
}

fn parse_main(text: &str, file: &str, diags: &mut Vec<Diagnostic>) -> BTreeMap<String, Setting> {
    let mut out: BTreeMap<String, Setting> = BTreeMap::new();
    for ll in lines::logical_lines(text) {
        if ll.text.starts_with([' ', '\t']) {
            diags.push(Diagnostic::error(
                file,
                Some(ll.line),
                "continuation line without a parameter line before it".into(),
            ));
            continue;
        }
        let Some((name, value)) = ll.text.split_once('=') else {
            diags.push(Diagnostic::error(
                file,
                Some(ll.line),
                format!("missing '=' after parameter name: \"{}\"", ll.text.trim()),
            ));
            continue;
        };
        let name = name.trim();
        if name.is_empty() || !name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
            diags.push(Diagnostic::error(
                file,
                Some(ll.line),
                format!("bad parameter name: \"{name}\""),
            ));
            continue;
        }
        let value = value.trim().to_string();
        if let Some(pos) = value.find(" #").or_else(|| value.find("\t#")) {
            diags.push(Diagnostic::warning(
                file,
                Some(ll.line),
                format!(
                    "'#' after text is not a comment: it is part of the value of {name} (\"{}\")",
                    &value[pos + 1..]
                ),
            ));
        }
        if let Some(prev) = out.get(name) {
            diags.push(Diagnostic::warning(
                file,
                Some(ll.line),
                format!("{name} overrides its earlier setting at line {}", prev.line),
            ));
        }
        out.insert(
            name.to_string(),
            Setting {
                value,
                line: ll.line,
            },
        );
    }
    out
}

/// The largest main.cf or master.cf Postern reads.
pub const CONFIG_FILE_CAP: u64 = 16 << 20;
/// The largest table source file read into memory.
pub const TABLE_FILE_CAP: u64 = 512 << 20;

/// Where an installed system keeps its configuration, as /etc/postfix is
/// Postfix's: the instance used when neither `-c` nor MAIL_CONFIG names one
/// and `/etc/postern/main.cf` exists (a package or the appliance image put
/// it there). Without it, the embedded default configuration applies.
pub const SYSTEM_CONFIG_DIR: &str = "/etc/postern";

/// [`SYSTEM_CONFIG_DIR`] when it holds a main.cf.
pub fn system_config_dir() -> Option<PathBuf> {
    let dir = Path::new(SYSTEM_CONFIG_DIR);
    dir.join("main.cf").is_file().then(|| dir.to_path_buf())
}

/// Reads a text file of at most `cap` bytes: a larger one is an error of
/// kind `FileTooLarge`, never an allocation without bound.
pub fn read_capped(path: &std::path::Path, cap: u64) -> std::io::Result<String> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let mut buf = Vec::new();
    f.take(cap.saturating_add(1)).read_to_end(&mut buf)?;
    if buf.len() as u64 > cap {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("larger than {cap} bytes"),
        ));
    }
    String::from_utf8(buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(main: &str, master: &str) -> Config {
        Config::from_texts(
            Some(Path::new("/etc/postern")),
            "main.cf",
            main,
            "master.cf",
            master,
            false,
            PathBuf::from("/work"),
            vec![],
        )
    }

    #[test]
    fn postscreen_needs_its_pass_service_and_sound_lists() {
        let ps = "127.0.0.1:25 inet n - n - 1 postscreen\n";
        // No pass service: an error on the postscreen line.
        let c = cfg("myhostname = mx.example.com\n", ps);
        let errs: Vec<_> = c.errors().map(|d| (d.line, d.message.clone())).collect();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].0, Some(1));
        assert!(errs[0].1.contains("smtpd pass - - n - - smtpd"), "{errs:?}");
        // With one, and a Postfix dnsblog line carried over (a warning).
        let master = format!("{ps}smtpd pass - - n - - smtpd\ndnsblog unix - - n - 0 dnsblog\n");
        let c = cfg("myhostname = mx.example.com\n", &master);
        assert!(!c.has_errors(), "{:?}", c.diagnostics);
        let p = c.params().unwrap();
        assert_eq!(p.str("postern_postscreen_services"), "127.0.0.1:25");
        // A bad DNS list or access list item, named with its line.
        let c = cfg(
            "myhostname = mx.example.com\npostscreen_dnsbl_sites = zen.example*x\npostscreen_access_list = permit_mynetworks, bogus\n",
            &master,
        );
        let errs: Vec<_> = c.errors().map(|d| (d.line, d.message.clone())).collect();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(errs[0].0, Some(2));
        assert!(errs[0].1.contains("bad DNSBL weight factor"), "{errs:?}");
        assert_eq!(errs[1].0, Some(3));
        // A pass service without postscreen in front: a warning.
        let c = cfg(
            "myhostname = mx.example.com\n",
            "127.0.0.1:25 inet n - n - - smtpd\nsmtpd pass - - n - - smtpd\n",
        );
        assert!(!c.has_errors());
        assert!(c.diagnostics.iter().any(|d| {
            d.message
                .contains("has no postscreen service in front of it")
        }));
    }

    #[test]
    fn three_errors_all_reported_with_lines() {
        let c = cfg(
            "myhostname = mx.example.com\nsmtpd_timeout = soon\nthis line is wrong\nsmtpd_recipient_limit = 50\nmessage_size_limit = 10240000\n",
            EMBEDDED_MASTER_CF,
        );
        let errs: Vec<_> = c.errors().map(|d| (d.file.as_str(), d.line)).collect();
        assert_eq!(
            errs,
            vec![
                ("main.cf", Some(2)),
                ("main.cf", Some(3)),
                ("main.cf", Some(4))
            ]
        );
    }

    #[test]
    fn unknown_and_user_defined_parameters() {
        let c = cfg(
            "my_restrictions = permit_mynetworks\nsmtpd_client_restrictions = $my_restrictions\nbogus_param = 1\n",
            EMBEDDED_MASTER_CF,
        );
        assert!(!c.has_errors());
        let warns: Vec<_> = c.diagnostics.iter().map(|d| d.line).collect();
        assert_eq!(warns, vec![Some(3)]);
        let p = c.params().unwrap();
        assert_eq!(
            p.list("smtpd_client_restrictions").unwrap(),
            vec!["permit_mynetworks"]
        );
    }

    #[test]
    fn defaults_expand_and_paths_resolve() {
        let c = cfg("myhostname = mx.example.com\n", EMBEDDED_MASTER_CF);
        let p = c.params().unwrap();
        assert_eq!(p.str("smtpd_banner"), "mx.example.com ESMTP Postern");
        assert_eq!(p.str("queue_directory"), "/work/postern-data/queue");
        assert_eq!(
            p.list("mydestination").unwrap(),
            vec!["mx.example.com", "localhost.example.com", "localhost"]
        );
        assert_eq!(
            p.duration("smtpd_timeout").unwrap(),
            std::time::Duration::from_secs(300)
        );
    }

    #[test]
    fn master_overrides_are_checked_in_context() {
        let c = cfg(
            "",
            "127.0.0.1:25 inet n - n - - smtpd\n  -o smtpd_timeout=never\n",
        );
        let e: Vec<_> = c.errors().collect();
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].file.as_str(), e[0].line), ("master.cf", Some(2)));
        let svc = &c.services[0];
        let c2 = cfg(
            "",
            "127.0.0.1:25 inet n - n - - smtpd -o smtpd_timeout=20s\n",
        );
        let p = c2.params_with(&c2.services[0].overrides).unwrap();
        assert_eq!(p.duration("smtpd_timeout").unwrap().as_secs(), 20);
        assert_eq!(svc.overrides[0].line, 2);
    }

    #[test]
    fn an_unknown_inet_protocol_is_an_error_at_its_line() {
        let c = cfg(
            "myhostname = mx.example\ninet_protocols = ipv4, ipv5\n",
            EMBEDDED_MASTER_CF,
        );
        let e: Vec<_> = c.errors().collect();
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].line, Some(2));
        assert!(e[0].message.contains("ipv5"), "{}", e[0].message);
        let ok = cfg("inet_protocols = ipv4\n", EMBEDDED_MASTER_CF);
        assert_eq!(ok.errors().count(), 0);
    }

    #[test]
    fn an_unknown_rewriting_word_is_an_error_at_its_line() {
        let c = cfg(
            "myhostname = mx.example\nmasquerade_classes = envelope_sender, header_sendr\nlocal_header_rewrite_clients = permit_tls_clientcerts\n",
            EMBEDDED_MASTER_CF,
        );
        let e: Vec<_> = c.errors().collect();
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[0].line, Some(2));
        assert!(e[0].message.contains("header_sendr"), "{}", e[0].message);
        assert_eq!(e[1].line, Some(3));
        assert!(
            e[1].message.contains("not supported by Postern"),
            "{}",
            e[1].message
        );
        let ok = cfg(
            "canonical_classes = envelope_sender, header_sender\nlocal_header_rewrite_clients = static:all\n",
            EMBEDDED_MASTER_CF,
        );
        assert_eq!(ok.errors().count(), 0);
    }

    #[test]
    fn transports_postern_lacks_are_errors_at_their_line() {
        let c = cfg(
            "myhostname = mx.example\nvirtual_mailbox_domains = v.example\ndefault_transport = uucp\nrelay_transport = lmtp:\n",
            EMBEDDED_MASTER_CF,
        );
        let e: Vec<_> = c.errors().collect();
        assert_eq!(e.len(), 3, "{e:?}");
        // virtual_transport keeps its default (virtual), which needs a line.
        assert!(e.iter().any(|d| d.message.contains("virtual(8)")), "{e:?}");
        assert!(
            e.iter()
                .any(|d| d.line == Some(3) && d.message.contains("uucp")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|d| d.line == Some(4) && d.message.contains("needs a next hop")),
            "{e:?}"
        );
        let ok = cfg(
            "virtual_mailbox_domains = v.example\nvirtual_transport = lmtp:unix:/run/dovecot/lmtp\n",
            EMBEDDED_MASTER_CF,
        );
        assert_eq!(
            ok.errors().count(),
            0,
            "{:?}",
            ok.errors().collect::<Vec<_>>()
        );
        let sockets = crate::tables::lmtp_sockets(&ok.params().unwrap());
        assert_eq!(sockets, vec![std::path::PathBuf::from("/run/dovecot/lmtp")]);
    }

    #[test]
    fn home_mailbox_must_be_a_maildir_inside_the_home() {
        for (v, ok) in [
            ("Maildir/", true),
            ("mail/inbox/", true),
            ("Mailbox", false),
            ("/var/mail/x/", false),
            ("../x/", false),
        ] {
            let c = cfg(&format!("home_mailbox = {v}\n"), EMBEDDED_MASTER_CF);
            let e: Vec<_> = c.errors().collect();
            assert_eq!(e.is_empty(), ok, "{v}: {e:?}");
            if !ok {
                assert_eq!(e[0].line, Some(1));
            }
        }
    }

    #[test]
    fn a_parameter_read_before_the_jail_is_refused_as_an_override() {
        let c = cfg(
            "",
            "127.0.0.1:25 inet n - n - - smtpd\n  -o smtpd_tls_ask_ccert=yes\n  -o smtpd_tls_CAfile=/etc/ssl/ca.pem\n",
        );
        let e: Vec<_> = c.errors().collect();
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!((e[0].file.as_str(), e[0].line), ("master.cf", Some(3)));
        assert!(
            e[0].message.contains("set it in main.cf"),
            "{}",
            e[0].message
        );
    }

    #[test]
    fn expansion_loop_is_an_error_at_its_line() {
        let c = cfg("myorigin = $a\na = $myorigin\n", EMBEDDED_MASTER_CF);
        assert!(c.errors().any(|d| d.line == Some(1)));
    }

    /// From the config_files fuzz target (fuzz/regressions/config_files/
    /// default-expands-bad-setting): a setting that references an undefined
    /// parameter is reported at its line, and a default value that expands
    /// it (mydestination names $myhostname) is reported as "(default)",
    /// without a line, rather than at a line of a file it is not in.
    #[test]
    fn a_default_that_expands_a_bad_setting_is_reported_without_a_line() {
        let c = cfg("myhostname = mx.example$b\nb = ${a}\n", EMBEDDED_MASTER_CF);
        let errs: Vec<_> = c.errors().map(|d| (d.file.as_str(), d.line)).collect();
        assert!(errs.contains(&("main.cf", Some(1))), "{errs:?}");
        assert!(
            errs.iter().all(
                |(f, l)| (*f == "main.cf" && l.is_some()) || (*f == "(default)" && l.is_none())
            ),
            "{errs:?}"
        );
    }

    #[test]
    fn embedded_config_is_clean() {
        let c = Config::load(None);
        assert!(c.diagnostics.is_empty(), "{:?}", c.diagnostics);
        assert!(c.params().is_ok());
    }
}
