//! `postern probe ROLE`: enters ROLE's real jail (the same spec the daemon
//! uses, built from the same configuration) and then tries operations the
//! role must not be able to do, and some it must. Prints one JSON object.
//! The test suite runs it for every role and checks each answer.
use std::path::Path;
use std::process::ExitCode;

use postern_config::{Params, Role};
use serde_json::{Value, json};

use crate::{master, roles};

fn outcome<T, E: std::fmt::Display>(r: Result<T, E>) -> Value {
    match r {
        Ok(_) => json!({ "ok": true }),
        Err(e) => json!({ "ok": false, "error": e.to_string() }),
    }
}

fn write_file_in(dir: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let p = dir.join(format!(".probe-{}", std::process::id()));
    let mut f = std::fs::File::create(&p)?;
    f.write_all(b"probe")?;
    f.sync_all()?;
    std::fs::remove_file(&p)
}

pub fn run(role: Role, params: &Params) -> ExitCode {
    if roles::spec(role).is_none() {
        eprintln!("postern: fatal: no such role: {role}");
        return ExitCode::FAILURE;
    }
    let layout = match master::dirs::prepare(params) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("postern: fatal: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The DKIM key files, named in the key table: read it before the jail.
    let dkim_keys: Vec<std::path::PathBuf> =
        postern_config::dkim::key_entries(&params.list("dkim_key_table").unwrap_or_default())
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.path)
            .collect();
    let report = match postern_sandbox::jail::enter(&roles::jail_spec(role, params, vec![])) {
        Ok(r) => r,
        Err(e) => {
            println!(
                "{}",
                json!({ "role": role.name(), "jail_error": e.to_string() })
            );
            return ExitCode::FAILURE;
        }
    };
    let ppid = nix::unistd::getppid();
    let mut checks = serde_json::Map::new();
    let mut check = |name: &str, v: Value| {
        checks.insert(name.into(), v);
    };
    check("open_shadow", outcome(std::fs::File::open("/etc/shadow")));
    check("open_passwd", outcome(std::fs::File::open("/etc/passwd")));
    check("read_queue_dir", outcome(std::fs::read_dir(&layout.queue)));
    check("write_queue_dir", outcome(write_file_in(&layout.queue)));
    check("read_data_dir", outcome(std::fs::read_dir(&layout.data)));
    check(
        "write_mail_spool",
        outcome(write_file_in(Path::new(params.str("mail_spool_directory")))),
    );
    // The TLS private keys: read by the broker before its jail, by no one after.
    let mut key_files: Vec<String> = crate::tls::server_key_files(params)
        .map(|(_, k)| k)
        .unwrap_or_default();
    if !params.str("smtp_tls_key_file").is_empty() {
        key_files.push(params.str("smtp_tls_key_file").to_string());
    }
    check(
        "open_tls_keys",
        outcome(if key_files.is_empty() {
            Err(std::io::Error::other("no key files configured"))
        } else {
            key_files.iter().try_for_each(|f| {
                std::fs::File::open(f)
                    .map(drop)
                    .map_err(|e| std::io::Error::other(format!("{f}: {e}")))
            })
        }),
    );
    // The DKIM private keys likewise: ok when any one of them opens.
    check(
        "open_dkim_keys",
        outcome(if dkim_keys.is_empty() {
            Err(std::io::Error::other("no DKIM keys configured"))
        } else {
            let opened: Vec<String> = dkim_keys
                .iter()
                .filter(|f| std::fs::File::open(f).is_ok())
                .map(|f| f.display().to_string())
                .collect();
            if opened.is_empty() {
                Err(std::io::Error::other(format!(
                    "none of {} key file(s) opens",
                    dkim_keys.len()
                )))
            } else {
                Ok(opened)
            }
        }),
    );
    check(
        "execve",
        outcome(nix::unistd::execv(c"/bin/true", &[c"/bin/true"])),
    );
    check(
        "fork",
        outcome(std::process::Command::new("/bin/true").status()),
    );
    check(
        "inet_socket",
        outcome(nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Inet,
            nix::sys::socket::SockType::Stream,
            nix::sys::socket::SockFlag::empty(),
            None,
        )),
    );
    check("ptrace_parent", outcome(nix::sys::ptrace::attach(ppid)));
    check("signal_parent", outcome(nix::sys::signal::kill(ppid, None)));
    check(
        "setuid_root",
        outcome(nix::unistd::setuid(nix::unistd::Uid::from_raw(0))),
    );
    // What every role must still be able to do.
    check(
        "socketpair",
        outcome(postern_sandbox::fdpass::seqpacket_pair()),
    );
    check(
        "runtime",
        outcome(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| {
                    rt.block_on(async {
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                        tokio::task::spawn_blocking(|| 42).await
                    })
                })
                .and_then(|r| r.map_err(std::io::Error::other)),
        ),
    );
    let big = vec![7u8; 64 << 20];
    check(
        "alloc",
        outcome::<_, String>(if big[big.len() - 1] == 7 {
            Ok(())
        } else {
            Err("bad".into())
        }),
    );
    println!(
        "{}",
        json!({
            "role": role.name(),
            "uid": nix::unistd::getuid().as_raw(),
            "gid": nix::unistd::getgid().as_raw(),
            "landlock": report.landlock.as_str(),
            "netns": report.netns.as_str(),
            "checks": checks,
        })
    );
    ExitCode::SUCCESS
}
