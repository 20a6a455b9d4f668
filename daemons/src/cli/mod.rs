//! The `postern` commands an admin types.
pub mod client;
pub mod conf;
pub mod dkim;
pub mod map;
pub mod passwd;
pub mod queue;
pub mod select;
pub mod sendmail;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use postern_config::{Config, Params};
use postern_ipc::control::{Reply, Request};

use crate::master;
use client::ClientError;

pub fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("postern: fatal: {msg}");
    ExitCode::FAILURE
}

/// Loads the configuration, reads every table it names, and prints what is
/// wrong with it. Returns None (after printing every error) when it cannot
/// be used.
pub fn load(dir: Option<&Path>) -> Option<(Config, Params)> {
    load_with(dir, true)
}

/// [`load`] with or without reading the tables (newaliases builds them).
pub fn load_with(dir: Option<&Path>, tables: bool) -> Option<(Config, Params)> {
    let mut cfg = Config::load(dir);
    if tables {
        cfg.check_tables();
    }
    for d in &cfg.diagnostics {
        eprintln!("postern: {d}");
    }
    if cfg.has_errors() {
        return None;
    }
    match cfg.params() {
        Ok(p) => Some((cfg, p)),
        Err(errs) => {
            for e in errs {
                eprintln!("postern: {e}");
            }
            None
        }
    }
}

fn socket(params: &Params) -> PathBuf {
    master::dirs::Layout::new(params).control
}

pub fn queue(dir: Option<&Path>, cmd: queue::QueueCmd) -> ExitCode {
    queue::run(&control_socket(dir), cmd)
}

/// mailq and `sendmail -bp`: through the control socket when the caller
/// may use it (root, the instance's owner), otherwise through the public
/// showq socket, where authorized_mailq_users decides.
pub fn mailq(dir: Option<&Path>) -> ExitCode {
    let params = Config::load(dir).params_lenient();
    let control = socket(&params);
    let usable =
        !control.exists() || nix::unistd::access(&control, nix::unistd::AccessFlags::W_OK).is_ok();
    let path = if usable {
        control
    } else {
        crate::paths::showq_socket(&params)
    };
    queue::run(
        &path,
        queue::QueueCmd::List {
            json: false,
            select: select::Select::default(),
        },
    )
}

/// The control socket of the instance in `dir`, even when its configuration
/// has errors elsewhere: status and stop must work exactly then.
fn control_socket(dir: Option<&Path>) -> PathBuf {
    socket(&Config::load(dir).params_lenient())
}

pub fn start(dir: Option<&Path>, foreground: bool, detached: bool) -> ExitCode {
    let Some((cfg, params)) = load(dir) else {
        return ExitCode::FAILURE;
    };
    match client::request(&socket(&params), Request::Status) {
        Err(ClientError::NotRunning) => {}
        _ => return fail("the Postern mail system is already running"),
    }
    if let Err(errs) = map::ensure_aliases_where_possible(&params) {
        for e in errs {
            eprintln!("postern: error: {e}");
        }
        return ExitCode::FAILURE;
    }
    if foreground || detached {
        let opts = master::Options {
            foreground: foreground && !detached,
            config_dir: dir.map(Path::to_path_buf),
        };
        return match master::run(cfg, opts) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        };
    }
    eprintln!("postern: starting the Postern mail system");
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return fail(format!("cannot find my own binary: {e}")),
    };
    let mut cmd = std::process::Command::new(exe);
    if let Some(d) = dir {
        cmd.arg("-c").arg(d);
    }
    cmd.args(["start", "--detached"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    postern_sandbox::sys::start_new_session(&mut cmd);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot start the master: {e}")),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            return fail(format!(
                "the master exited ({st}); see the mail log for why"
            ));
        }
        if let Ok(Reply::Status(ps)) = client::request(&socket(&params), Request::Status)
            && ps.len() > 1
            && ps
                .iter()
                .all(|p| p.state == "running" || p.state == "on demand" || p.state == "off")
        {
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    fail("the mail system did not come up within 30s; see the mail log")
}

pub fn stop(dir: Option<&Path>) -> ExitCode {
    let sock = control_socket(dir);
    match client::request(&sock, Request::Stop) {
        Ok(Reply::Ok(_)) => {}
        Ok(Reply::Error(e)) => return fail(e),
        Ok(_) => return fail("unexpected reply from the master"),
        Err(e) => return fail(e),
    }
    eprintln!("postern: stopping the Postern mail system");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if matches!(
            client::request(&sock, Request::Status),
            Err(ClientError::NotRunning)
        ) {
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    fail("the master did not stop within 20s")
}

pub fn reload(dir: Option<&Path>, service: Option<String>) -> ExitCode {
    // The master checks again (tables, not certificate files: a renewal
    // gone wrong keeps the current pair, see check_tables_for_reload).
    let Some((_, params)) = load_with(dir, false) else {
        return ExitCode::FAILURE;
    };
    match client::request(
        &socket(&params),
        Request::Reload(service.unwrap_or_default()),
    ) {
        Ok(Reply::Ok(m)) => {
            eprintln!("postern: {m}");
            ExitCode::SUCCESS
        }
        Ok(Reply::Error(e)) => fail(e),
        Ok(_) => fail("unexpected reply from the master"),
        Err(e) => fail(e),
    }
}

pub fn status(dir: Option<&Path>, json: bool) -> ExitCode {
    let ps = match client::request(&control_socket(dir), Request::Status) {
        Ok(Reply::Status(ps)) => ps,
        Ok(Reply::Error(e)) => return fail(e),
        Ok(_) => return fail("unexpected reply from the master"),
        Err(e) => return fail(e),
    };
    if json {
        let list: Vec<serde_json::Value> = ps
            .iter()
            .map(|p| {
                serde_json::json!({
                    "role": p.role, "pid": p.pid, "uid": p.uid, "gid": p.gid,
                    "no_new_privs": p.no_new_privs, "seccomp": p.seccomp, "cap_eff": p.cap_eff,
                    "landlock": p.landlock, "netns": p.netns, "state": p.state, "restarts": p.restarts,
                    "nofile": p.nofile,
                })
            })
            .collect();
        println!("{}", serde_json::json!({ "processes": list }));
    } else {
        println!(
            "{:<10} {:>7} {:>6} {:>3} {:>7} {:<16} {:<15} {:<7} {:<10} {:>8} {:>8}",
            "ROLE",
            "PID",
            "UID",
            "NNP",
            "SECCOMP",
            "CAPEFF",
            "LANDLOCK",
            "NETNS",
            "STATE",
            "RESTARTS",
            "NOFILE"
        );
        for p in &ps {
            println!(
                "{:<10} {:>7} {:>6} {:>3} {:>7} {:<16} {:<15} {:<7} {:<10} {:>8} {:>8}",
                p.role,
                p.pid,
                p.uid,
                u8::from(p.no_new_privs),
                p.seccomp,
                p.cap_eff,
                if p.landlock.is_empty() {
                    "-"
                } else {
                    &p.landlock
                },
                if p.netns.is_empty() { "-" } else { &p.netns },
                p.state,
                p.restarts,
                match p.nofile {
                    0 => "-".to_string(),
                    u64::MAX => "unlimited".to_string(),
                    n => n.to_string(),
                }
            );
        }
    }
    ExitCode::SUCCESS
}

/// `postern install`: the sendmail-compatible links, and the directories
/// (maildrop included) that sendmail needs before the first start.
pub fn install(dir: Option<&Path>, root: &Path, force: bool) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return fail(format!("cannot find my own binary: {e}")),
    };
    for link in [
        "usr/sbin/sendmail",
        "usr/lib/sendmail",
        "usr/bin/mailq",
        "usr/bin/newaliases",
    ] {
        let path = root.join(link);
        if let Some(parent) = path.parent()
            && let Err(e) = std::fs::create_dir_all(parent)
        {
            return fail(format!("cannot create {}: {e}", parent.display()));
        }
        match std::fs::symlink_metadata(&path) {
            Ok(m) if !m.file_type().is_symlink() && !force => {
                return fail(format!(
                    "{} exists and is not a symbolic link (another MTA?); remove it or use --force",
                    path.display()
                ));
            }
            Ok(_) => {
                if let Err(e) = std::fs::remove_file(&path) {
                    return fail(format!("cannot replace {}: {e}", path.display()));
                }
            }
            Err(_) => {}
        }
        if let Err(e) = std::os::unix::fs::symlink(&exe, &path) {
            return fail(format!("cannot link {}: {e}", path.display()));
        }
        println!("{} -> {}", path.display(), exe.display());
    }
    let Some((_, params)) = load(dir) else {
        return ExitCode::FAILURE;
    };
    match master::dirs::prepare(&params) {
        Ok(l) => {
            println!("created the directories under {}", l.data.display());
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}
