//! What the daemons tell the master: readiness, channel requests between
//! roles (checked against the peer graph), violations and exits.
use super::*;

impl Master {
    pub(super) fn child_mut(&mut self, role: Role, epoch: u64) -> Option<&mut Child> {
        self.slots
            .get_mut(&role)?
            .children
            .iter_mut()
            .find(|c| c.epoch == epoch)
    }

    pub(super) fn on_message(&mut self, role: Role, epoch: u64, msg: FromDaemon) {
        // smtp's trust-anchor files (tafile=) are files to open, where its
        // other "tables" are LMTP sockets to connect to.
        let tafiles = match &msg {
            FromDaemon::OpenTable { .. } if role == Role::Smtp => {
                crate::tables::tafile_paths(&self.params)
            }
            _ => Vec::new(),
        };
        let tables_allowed = match &msg {
            FromDaemon::OpenTable { .. } => crate::tables::allowed_files(role, &self.params),
            _ => Vec::new(),
        };
        let home_mailbox = match &msg {
            FromDaemon::OpenTable { .. } if role == Role::Local => {
                self.params.str("home_mailbox").to_string()
            }
            _ => String::new(),
        };
        let Some(child) = self.child_mut(role, epoch) else {
            return;
        };
        match msg {
            FromDaemon::Ready {
                landlock, netns, ..
            } => {
                if child.ready.is_some() {
                    return self.violation(role, epoch, "ready twice");
                }
                let pid = child.pid;
                child.ready = Some(Ready { landlock, netns });
                info!("{role} pid {pid} ready");
                // A reload: the new process is up, so the old one may drain.
                let slot = self.slots.get_mut(&role).expect("slot");
                let mut drained = Vec::new();
                for old in slot
                    .children
                    .iter_mut()
                    .filter(|c| c.epoch != epoch && !c.draining)
                {
                    old.draining = true;
                    let _ = old.out.send(ToDaemon::Shutdown);
                    drained.push(old.epoch);
                }
                for e in drained {
                    self.after(
                        Duration::from_secs(60),
                        Event::DrainDeadline { role, epoch: e },
                    );
                }
                self.serve_pending(role);
                if role == Role::Metrics {
                    self.report_to_metrics();
                }
            }
            FromDaemon::Connect {
                request_id,
                peer_role,
            } => {
                let Some(peer) = Role::from_name(&peer_role) else {
                    return self.violation(
                        role,
                        epoch,
                        &format!("asked for unknown role {peer_role}"),
                    );
                };
                if !crate::peers::allowed(role, peer) {
                    return self.violation(
                        role,
                        epoch,
                        &format!("asked for a channel to {peer}, which is not in its peer graph"),
                    );
                }
                let configured = crate::roles::configured(peer, &self.params);
                let slot = self
                    .slots
                    .get_mut(&peer)
                    .expect("every role has a slot from start-up");
                if slot.pending.len() >= 1024 || !configured {
                    if let Some(c) = self.child_mut(role, epoch) {
                        let _ = c.out.send(ToDaemon::ConnectFailed {
                            request_id,
                            reason: format!("{peer} is not available"),
                        });
                    }
                    return;
                }
                slot.pending.push(PendingConnect {
                    from: role,
                    from_epoch: epoch,
                    request_id,
                    at: Instant::now(),
                });
                // An on-demand role starts at its first request; the
                // request is served once it is ready.
                self.start_on_first_use(peer, &format!("asked by {role}"));
                self.serve_pending(peer);
            }
            FromDaemon::Connections { opened, open } => {
                child.open_conns = open;
                self.slots
                    .get_mut(&role)
                    .expect("slot")
                    .ledger
                    .connections(Instant::now(), opened);
            }
            FromDaemon::Pong(n) => {
                if child.ping.is_some_and(|(sent, _)| sent == n) {
                    child.ping = None;
                } else {
                    self.violation(role, epoch, "pong without a ping");
                }
            }
            FromDaemon::OpenTable { request_id, path } => {
                // Only roles that answer lookups, and only files the
                // configuration names: anything else is a violation.
                let wanted = std::path::PathBuf::from(&path);
                // local's other files: users' .forward files and
                // home_mailbox Maildir files, checked (master/home.rs).
                if role == Role::Local && !tables_allowed.contains(&wanted) {
                    let file = super::home::forward_file(&wanted)
                        .or_else(|| super::home::maildir_request(&wanted, &home_mailbox));
                    if let Some(file) = file {
                        let _ = child.out.send(ToDaemon::TableFile { request_id, file });
                        return;
                    }
                }
                if !tables_allowed.contains(&wanted) {
                    return self.violation(
                        role,
                        epoch,
                        &format!("asked to open {path}, which is not a configured table"),
                    );
                }
                // proxymap's "tables" are the sockets of socketmap:unix:
                // servers: the master connects, the jail needs no socket.
                let file = if !tafiles.contains(&wanted)
                    && matches!(
                        role,
                        Role::Proxymap | Role::Smtp | Role::Policy | Role::Milter
                    ) {
                    connect_socket(&wanted)
                } else {
                    open_table(&wanted)
                };
                let _ = child.out.send(ToDaemon::TableFile { request_id, file });
            }
        }
    }

    /// Starts an on-demand role that has never run (a role that ran is
    /// restarted by supervision, not here).
    pub(super) fn start_on_first_use(&mut self, role: Role, why: &str) {
        let Some(slot) = self.slots.get_mut(&role) else {
            return;
        };
        let first_use = slot.children.is_empty()
            && !slot.used
            && !slot.restart_scheduled
            && slot.throttled_until.is_none();
        if first_use && !self.stopping {
            info!("starting {role} on first use ({why})");
            self.spawn(role);
        }
    }

    /// Hands out channels to `server` for every waiting request.
    pub(super) fn serve_pending(&mut self, server: Role) {
        let timeout = self
            .params
            .duration("ipc_query_timeout")
            .unwrap_or(Duration::from_secs(10));
        let slot = self.slots.get_mut(&server).expect("slot");
        let Some(srv) = slot.current_ready() else {
            return;
        };
        let srv_out = srv.out.clone();
        let pending = std::mem::take(&mut slot.pending);
        for p in pending {
            if p.at.elapsed() > timeout {
                continue; // the requester has given up already
            }
            let Some(client) = self
                .slots
                .get(&p.from)
                .and_then(|s| s.children.iter().find(|c| c.epoch == p.from_epoch))
            else {
                continue;
            };
            let (a, b) = match postern_sandbox::fdpass::seqpacket_pair() {
                Ok(pair) => pair,
                Err(e) => {
                    warn!("cannot create a channel {} -> {server}: {e}", p.from);
                    continue;
                }
            };
            let _ = srv_out.send(ToDaemon::Peer {
                request_id: 0,
                peer_role: p.from.name().into(),
                fd: b,
            });
            let _ = client.out.send(ToDaemon::Peer {
                request_id: p.request_id,
                peer_role: server.name().into(),
                fd: a,
            });
        }
    }

    /// Gives the master's own figures a channel to a (new) metrics process.
    fn report_to_metrics(&mut self) {
        let Some(tx) = &self.metrics_uplink else {
            return;
        };
        let Some(srv) = self.slots.get(&Role::Metrics).and_then(Slot::current_ready) else {
            return;
        };
        match postern_sandbox::fdpass::seqpacket_pair() {
            Ok((mine, theirs)) => {
                let _ = srv.out.send(ToDaemon::Peer {
                    request_id: 0,
                    peer_role: Role::Master.name().into(),
                    fd: theirs,
                });
                let _ = tx.send(mine);
            }
            Err(e) => warn!("cannot create a channel master -> metrics: {e}"),
        }
    }

    /// A daemon broke the protocol with the master: it is buggy or
    /// compromised. Kill it; supervision restarts it.
    pub(super) fn violation(&mut self, role: Role, epoch: u64, why: &str) {
        if let Some(c) = self.child_mut(role, epoch) {
            warn!("{role} pid {}: {why}; killing it", c.pid);
            Self::kill(c.pid, nix::sys::signal::Signal::SIGKILL);
        }
    }

    pub(super) fn on_broken(&mut self, role: Role, epoch: u64, why: &str) {
        if let Some(c) = self.child_mut(role, epoch) {
            // A closed channel usually means the process is exiting; the exit
            // event follows. Anything else is a violation.
            if !why.contains("peer closed the channel") {
                let pid = c.pid;
                warn!("control channel of {role} pid {pid}: {why}");
                Self::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }

    pub(super) fn on_exit(&mut self, role: Role, epoch: u64, status: std::io::Result<ExitStatus>) {
        let stopping = self.stopping;
        let slot = self.slots.get_mut(&role).expect("slot");
        let Some(idx) = slot.children.iter().position(|c| c.epoch == epoch) else {
            return;
        };
        let child = slot.children.remove(idx);
        if stopping || child.draining {
            info!("{role} pid {} exited ({})", child.pid, describe(&status));
            if slot.start_after_drain && slot.current().is_none() && !stopping {
                slot.start_after_drain = false;
                self.spawn(role);
            }
            return;
        }
        let lived = child.started.elapsed();
        if abnormal(&status) {
            warn!(
                "process {} {role} pid {} {}",
                self.exe.display(),
                child.pid,
                describe(&status)
            );
        } else {
            warn!("{role} pid {} exited unexpectedly", child.pid);
        }
        crate::metrics::inc(&crate::metrics::catalog::RESTARTS, &[role.name()]);
        if let Some(v) = slot.ledger.crash(Instant::now(), child.open_conns > 0) {
            crate::metrics::inc(&crate::metrics::catalog::THROTTLES, &[role.name()]);
            let t = self
                .params
                .duration("service_throttle_time")
                .unwrap_or(Duration::from_secs(60));
            warn!(
                "service {role}: {} of {} recent connections ended in a crash -- throttling for {}s",
                v.crashes,
                v.connections,
                t.as_secs()
            );
            slot.throttled_until = Some(Instant::now() + t);
            slot.ledger.reset();
            self.schedule_restart(role, t);
            return;
        }
        if child.ready.is_none() {
            warn!("{role}: bad command startup -- throttling");
        }
        slot.backoff = supervise::next_backoff(slot.backoff, lived);
        let d = slot.backoff;
        self.schedule_restart(role, d);
    }
}
