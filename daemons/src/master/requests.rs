//! Requests from the control socket: status, stop, reload, and channels
//! to the queue manager for `postern queue`.
use std::os::fd::OwnedFd;

use postern_ipc::master::{OpenedFile, Reload};

use super::*;

impl Master {
    pub(super) fn on_control(&mut self, req: Request) -> Reply {
        match req {
            Request::Status => Reply::Status(self.status()),
            Request::Stop => {
                self.stop();
                Reply::Ok("stopping".into())
            }
            Request::Reload(svc) => self.reload(&svc),
            Request::Queue => self.queue_channel("admin"),
            Request::Tables => self.admin_channel(Role::Broker, "table lookups", "admin"),
        }
    }

    /// A channel to the queue manager: "admin" (the control socket) may do
    /// everything, "showq" (the public socket) may only list.
    pub(super) fn queue_channel(&self, peer: &str) -> Reply {
        self.admin_channel(Role::Qmgr, "the queue manager", peer)
    }

    /// A channel from the control socket to `role`'s admin side.
    pub(super) fn admin_channel(&self, role: Role, what: &str, peer: &str) -> Reply {
        let Some(qmgr) = self.slots.get(&role).and_then(Slot::current_ready) else {
            return Reply::Error(format!("{what}: {role} is not running"));
        };
        match postern_sandbox::fdpass::seqpacket_pair() {
            Ok((mine, theirs)) => {
                let _ = qmgr.out.send(ToDaemon::Peer {
                    request_id: 0,
                    peer_role: peer.into(),
                    fd: theirs,
                });
                Reply::Channel(mine)
            }
            Err(e) => Reply::Error(format!("cannot create a channel: {e}")),
        }
    }

    pub(super) fn status(&self) -> Vec<ProcessInfo> {
        let info = |role: &str, pid: u32, ll: &str, netns: &str, state: &str, restarts: u32| {
            let st = postern_sandbox::procstat::read(pid).ok();
            ProcessInfo {
                role: role.into(),
                pid,
                uid: st.as_ref().map_or(0, |s| s.uid[1]),
                gid: st.as_ref().map_or(0, |s| s.gid[1]),
                no_new_privs: st.as_ref().is_some_and(|s| s.no_new_privs),
                seccomp: st.as_ref().map_or(0, |s| s.seccomp),
                cap_eff: st.as_ref().map_or_else(String::new, |s| s.cap_eff.clone()),
                landlock: ll.into(),
                netns: netns.into(),
                state: state.into(),
                restarts,
                nofile: postern_sandbox::procstat::nofile(pid).unwrap_or(0),
            }
        };
        let mut out = vec![info(
            "master",
            std::process::id(),
            "not_enforced",
            "shared",
            "running",
            0,
        )];
        for slot in self.slots.values() {
            if slot.children.is_empty() {
                let state = if !crate::roles::configured(slot.role, &self.params) {
                    // Off in this configuration (metrics without metrics_listen).
                    "off"
                } else if slot.throttled_until.is_some() {
                    "throttled"
                } else if !slot.used {
                    // Not started yet: it starts on first use.
                    "on demand"
                } else {
                    "restarting"
                };
                out.push(ProcessInfo {
                    role: slot.role.name().into(),
                    pid: 0,
                    uid: 0,
                    gid: 0,
                    no_new_privs: false,
                    seccomp: 0,
                    cap_eff: String::new(),
                    landlock: String::new(),
                    netns: String::new(),
                    state: state.into(),
                    restarts: slot.restarts,
                    nofile: 0,
                });
            }
            for c in &slot.children {
                let state = match (&c.ready, c.draining) {
                    (_, true) => "stopping",
                    (Some(_), false) => "running",
                    (None, false) => "starting",
                };
                let (ll, ns) = c
                    .ready
                    .as_ref()
                    .map_or(("", ""), |r| (r.landlock.as_str(), r.netns.as_str()));
                out.push(info(slot.role.name(), c.pid, ll, ns, state, slot.restarts));
            }
        }
        out
    }

    pub(super) fn stop(&mut self) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        info!("stopping the Postern mail system");
        for slot in self.slots.values() {
            for c in &slot.children {
                let _ = c.out.send(ToDaemon::Shutdown);
            }
        }
        self.after(Duration::from_secs(10), Event::KillAll);
    }

    /// Re-reads the configuration and restarts `service` (a role name), or
    /// every role when it is empty. Other roles keep their processes.
    pub(super) fn reload(&mut self, service: &str) -> Reply {
        let targets: Vec<Role> = if service.is_empty() {
            self.slots.keys().copied().collect()
        } else {
            match Role::from_name(service).filter(|r| self.slots.contains_key(r)) {
                Some(r) => vec![r],
                None => return Reply::Error(format!("unknown service: {service}")),
            }
        };
        let mut cfg = Config::load(self.opts.config_dir.as_deref());
        cfg.check_tables_for_reload();
        if cfg.has_errors() {
            let errs: Vec<String> = cfg.errors().map(ToString::to_string).collect();
            return Reply::Error(format!(
                "configuration has errors; nothing reloaded:\n{}",
                errs.join("\n")
            ));
        }
        let params = match cfg.params() {
            Ok(p) => p,
            Err(e) => {
                return Reply::Error(
                    e.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("\n"),
                );
            }
        };
        // The endpoint's sockets are bound once, at start (as Postfix's
        // inet_interfaces needs a restart): a changed address would
        // otherwise leave the metrics role running with none.
        if params.str("metrics_listen") != self.params.str("metrics_listen") {
            return Reply::Error(
                "metrics_listen changed: stop and start Postern to apply it; nothing reloaded"
                    .into(),
            );
        }
        if targets.contains(&Role::Smtpd) || targets.contains(&Role::Postscreen) {
            // Listeners may have changed: bind the new set, keeping sockets
            // whose address is unchanged (no refused connections).
            let mut old: Vec<(std::net::SocketAddr, std::net::TcpListener)> =
                self.listeners.drain(..).flat_map(|b| b.sockets).collect();
            let mut fresh = Vec::new();
            for svc in cfg.services.iter().filter(|s| s.listen.is_some()) {
                let want = listen::addresses_for(svc, &params);
                let mut sockets = Vec::new();
                for addr in want {
                    if let Some(i) = old.iter().position(|(a, _)| *a == addr) {
                        sockets.push(old.remove(i));
                    } else {
                        match listen::bind_one(addr) {
                            Ok(s) => sockets.push((addr, s)),
                            Err(e) => return Reply::Error(format!("cannot listen on {addr}: {e}")),
                        }
                    }
                }
                let p = if svc.overrides.is_empty() {
                    Vec::new()
                } else {
                    cfg.params_with(&svc.overrides)
                        .map(|p| p.slice(svc.role.unwrap_or(Role::Smtpd)))
                        .unwrap_or_default()
                };
                fresh.push(listen::Bound {
                    service: svc.clone(),
                    params: p,
                    sockets,
                });
            }
            self.listeners = fresh;
        }
        // The broker keeps its process when only keys, certificates and
        // tables changed: queued mail and every channel stay as they are.
        // It hears of the reload before any restarted role asks it for a
        // channel, so a new smtpd gets the new certificate.
        let live = targets.contains(&Role::Broker) && self.reload_broker(&params);
        self.cfg = cfg;
        self.params = params;
        let restart: Vec<Role> = targets
            .into_iter()
            .filter(|r| !(live && *r == Role::Broker))
            .collect();
        for role in &restart {
            self.restart_role(*role);
        }
        let names: Vec<&str> = restart.iter().map(|r| r.name()).collect();
        let mut said = format!("restarting {}", names.join(" "));
        if live {
            said.push_str("; broker reloaded in place");
        }
        info!("reload -- {said}");
        Reply::Ok(format!("reloading: {said}"))
    }

    /// Sends the running broker its new slice and the key files it names,
    /// opened here. False when the broker must restart instead: it is not
    /// running, or something it reads only at start changed.
    fn reload_broker(&self, new: &Params) -> bool {
        let Some(broker) = self.slots.get(&Role::Broker).and_then(Slot::current) else {
            return false;
        };
        let fixed = |p: &Params| -> Vec<(String, String)> {
            let mut v = p.slice(Role::Broker);
            v.retain(|(n, _)| !crate::broker::LIVE_PARAMS.contains(&n.as_str()));
            v.sort();
            v
        };
        if fixed(&self.params) != fixed(new) {
            info!("reload -- a broker setting that needs a restart changed");
            return false;
        }
        let slice = new.slice(Role::Broker);
        let Ok(bp) = Params::from_pairs(slice.clone()) else {
            return false;
        };
        let files: Vec<OpenedFile> = crate::broker::key_files(&bp)
            .into_iter()
            .take(postern_ipc::master::MAX_RELOAD_FILES)
            .map(|path| {
                let file = std::fs::File::open(&path)
                    .map(OwnedFd::from)
                    .map_err(|e| e.to_string());
                OpenedFile { path, file }
            })
            .collect();
        broker
            .out
            .send(ToDaemon::Reload(Reload {
                params: slice,
                files,
            }))
            .is_ok()
    }

    pub(super) fn restart_role(&mut self, role: Role) {
        let exclusive = roles::spec(role).is_some_and(|s| s.exclusive);
        let on_demand = roles::spec(role).is_some_and(|s| s.on_demand)
            && !roles::wanted_at_start(role, &self.params);
        let configured = roles::configured(role, &self.params);
        let slot = self.slots.get_mut(&role).expect("slot");
        // A role the new configuration turns off (postscreen without a
        // postscreen service) stops; one it turns on starts.
        if !configured {
            for c in slot.children.iter_mut().filter(|c| !c.draining) {
                c.draining = true;
                let _ = c.out.send(ToDaemon::Shutdown);
            }
            return;
        }
        slot.ledger.reset();
        slot.backoff = Duration::ZERO;
        let current = slot.children.iter().position(|c| !c.draining);
        match current {
            Some(i) if exclusive => {
                let c = &mut slot.children[i];
                c.draining = true;
                let _ = c.out.send(ToDaemon::Shutdown);
                let epoch = c.epoch;
                slot.start_after_drain = true;
                self.after(
                    Duration::from_secs(10),
                    Event::DrainDeadline { role, epoch },
                );
            }
            // Start the new one; the old one drains once the new one is ready.
            Some(_) => self.spawn(role),
            // An on-demand role that never ran stays that way.
            None if !slot.used && on_demand => {}
            None => {
                if !slot.restart_scheduled {
                    self.spawn(role);
                }
            }
        }
    }
}
