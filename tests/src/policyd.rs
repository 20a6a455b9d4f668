//! Policy servers for check_policy_service tests: the recording server
//! (tests/tools/policy.py), and Debian's policyd-spf run per connection
//! as Postfix's spawn(8) would (tests/tools/spawn.py), in its own mount
//! namespace whose /etc/resolv.conf names a loopback DNS server.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::wait_for;

/// One request the recording server got.
#[derive(Debug, Clone)]
pub struct Request {
    /// The server's number for the connection it came on.
    pub conn: u64,
    /// The attributes, in the order they came.
    pub attrs: Vec<(String, String)>,
}

impl Request {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn names(&self) -> Vec<&str> {
        self.attrs.iter().map(|(n, _)| n.as_str()).collect()
    }
}

pub struct PolicyServer {
    /// As main.cf names it: `inet:IP:PORT` or `unix:/path`.
    pub endpoint: String,
    dir: PathBuf,
    child: Child,
}

fn tool(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tools")
        .join(name)
}

impl PolicyServer {
    /// On `ip:port`.
    pub fn tcp(ip: &str, port: u16, dir: &Path) -> PolicyServer {
        Self::start(
            &format!("inet:{ip}:{port}"),
            &["--listen", &format!("{ip}:{port}")],
            dir,
        )
    }

    /// On a Unix socket in `dir`.
    pub fn unix(dir: &Path) -> PolicyServer {
        let path = dir.join("policy.sock");
        let p = path.display().to_string();
        Self::start(&format!("unix:{p}"), &["--unix", &p], dir)
    }

    fn start(endpoint: &str, listen: &[&str], dir: &Path) -> PolicyServer {
        std::fs::create_dir_all(dir).unwrap();
        let ready = dir.join("ready");
        let _ = std::fs::remove_file(&ready);
        std::fs::write(dir.join("actions.json"), "{}").unwrap();
        let child = Command::new("/usr/bin/python3")
            .arg(tool("policy.py"))
            .args(listen)
            .arg("--log")
            .arg(dir.join("requests.jsonl"))
            .arg("--actions")
            .arg(dir.join("actions.json"))
            .arg("--ready")
            .arg(&ready)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tests/tools/policy.py");
        wait_for("policy server ready", Duration::from_secs(20), || {
            ready.exists().then_some(())
        });
        PolicyServer {
            endpoint: endpoint.into(),
            dir: dir.into(),
            child,
        }
    }

    /// What to answer, by recipient, else sender, else "*" (see
    /// policy.py for the faults).
    pub fn set_actions(&self, actions: &[(&str, &str)]) {
        let map: serde_json::Map<String, Value> = actions
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        std::fs::write(
            self.dir.join("actions.json"),
            Value::Object(map).to_string(),
        )
        .unwrap();
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        std::fs::read_to_string(self.dir.join("requests.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| Request {
                conn: v["conn"].as_u64().unwrap_or(0),
                attrs: v["attrs"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|p| {
                                (
                                    p[0].as_str().unwrap_or("").to_string(),
                                    p[1].as_str().unwrap_or("").to_string(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// Waits until `n` requests have come.
    pub fn wait_requests(&self, n: usize) -> Vec<Request> {
        wait_for(
            &format!("{n} policy requests"),
            Duration::from_secs(20),
            || {
                let r = self.requests();
                (r.len() >= n).then_some(r)
            },
        )
    }
}

impl Drop for PolicyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's policyd-spf, started for each connection on `ip:port` (as
/// spawn(8) does), with `conf` as its configuration, resolving through
/// the DNS server at `dns` (port 53): run in a private mount namespace
/// whose /etc/resolv.conf is bind-mounted over, so the host's stays
/// untouched.
pub struct Spawned {
    pub endpoint: String,
    child: Child,
}

impl Spawned {
    pub fn policyd_spf(
        ip: &str,
        port: u16,
        dns: std::net::IpAddr,
        conf: &str,
        dir: &Path,
    ) -> Spawned {
        let conf_path = dir.join("policyd-spf.conf");
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(&conf_path, conf).unwrap();
        let ready = dir.join("ready");
        let _ = std::fs::remove_file(&ready);
        let command = format!(
            "/usr/bin/python3 {spawn} --listen {ip}:{port} --ready {ready} -- /usr/bin/policyd-spf {conf}",
            spawn = tool("spawn.py").display(),
            ready = ready.display(),
            conf = conf_path.display(),
        );
        let child = Self::in_namespace(dns, dir, &command);
        wait_for("policyd-spf spawner ready", Duration::from_secs(20), || {
            ready.exists().then_some(())
        });
        Spawned {
            endpoint: format!("inet:{ip}:{port}"),
            child,
        }
    }
}

impl Spawned {
    /// Debian's opendkim as a Milter on `ip:port`, with `conf` (its
    /// opendkim.conf, without Socket), resolving through `dns`.
    pub fn opendkim(ip: &str, port: u16, dns: std::net::IpAddr, conf: &str, dir: &Path) -> Spawned {
        std::fs::create_dir_all(dir).unwrap();
        let conf_path = dir.join("opendkim.conf");
        std::fs::write(
            &conf_path,
            format!("{conf}\nSocket inet:{port}@{ip}\nSyslog no\nRequireSafeKeys false\n"),
        )
        .unwrap();
        let command = format!("/usr/sbin/opendkim -f -x {}", conf_path.display());
        let child = Self::in_namespace(dns, dir, &command);
        wait_for("opendkim listening", Duration::from_secs(20), || {
            std::net::TcpStream::connect((ip, port)).ok().map(|_| ())
        });
        Spawned {
            endpoint: format!("inet:{ip}:{port}"),
            child,
        }
    }

    /// Runs `command` in a private mount namespace whose /etc/resolv.conf
    /// names `dns` (port 53).
    fn in_namespace(dns: std::net::IpAddr, dir: &Path, command: &str) -> Child {
        let resolv = dir.join("resolv.conf");
        std::fs::write(
            &resolv,
            format!("nameserver {dns}\noptions timeout:2 attempts:1\n"),
        )
        .unwrap();
        let script = format!(
            "mount --bind {} /etc/resolv.conf && exec {command}",
            resolv.display()
        );
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("unshare -m (util-linux)")
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
