//! Starting, watching and restarting the daemons.
use super::*;

impl Master {
    pub(super) fn new_slot(&self, role: Role) -> Slot {
        let p = &self.params;
        Slot {
            role,
            children: Vec::new(),
            restarts: 0,
            backoff: Duration::ZERO,
            throttled_until: None,
            restart_scheduled: false,
            start_after_drain: false,
            ledger: CrashLedger::new(
                p.duration("service_crash_throttle_window")
                    .unwrap_or(Duration::from_secs(300)),
                p.int("service_crash_throttle_minimum").unwrap_or(3) as u32,
                p.int("service_crash_throttle_percent").unwrap_or(50) as u32,
            ),
            pending: Vec::new(),
            used: false,
        }
    }

    /// daemon_timeout: how long a daemon may leave the watchdog's ping
    /// unanswered before it is killed and restarted.
    pub(super) fn daemon_timeout(&self) -> Duration {
        self.params
            .duration("daemon_timeout")
            .unwrap_or(Duration::from_secs(60))
    }

    /// Pings go out four times per daemon_timeout.
    pub(super) fn watchdog_round(&self) -> Duration {
        (self.daemon_timeout() / 4).max(Duration::from_millis(250))
    }

    pub(super) fn watchdog(&mut self) {
        let limit = self.daemon_timeout();
        let seq = self.next_epoch;
        self.next_epoch += 1;
        let mut silent = Vec::new();
        for slot in self.slots.values_mut() {
            for c in slot
                .children
                .iter_mut()
                .filter(|c| c.ready.is_some() && !c.draining)
            {
                match c.ping {
                    Some((_, at)) if at.elapsed() > limit => silent.push((slot.role, c.pid, at)),
                    Some(_) => {}
                    None => {
                        c.ping = Some((seq, Instant::now()));
                        let _ = c.out.send(ToDaemon::Ping(seq));
                    }
                }
            }
        }
        for (role, pid, at) in silent {
            warn!(
                "{role} pid {pid}: no answer to the watchdog for {:.1}s (daemon_timeout {}s) -- killing it",
                at.elapsed().as_secs_f64(),
                limit.as_secs_f64()
            );
            Self::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        if !self.stopping {
            self.after(self.watchdog_round(), Event::Watchdog);
        }
    }

    pub(super) fn after(&self, d: Duration, ev: Event) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            let _ = tx.send(ev);
        });
    }

    /// Fork+exec `postern daemon ROLE --ipc-fd N` and send it its Setup.
    pub(super) fn spawn(&mut self, role: Role) {
        if let Some(slot) = self.slots.get_mut(&role) {
            slot.used = true;
        }
        match self.try_spawn(role) {
            Ok(child) => {
                let slot = self.slots.get_mut(&role).expect("slot");
                slot.children.push(child);
            }
            Err(e) => {
                warn!("cannot start {role}: {e}");
                self.schedule_restart(role, Duration::ZERO);
            }
        }
    }

    pub(super) fn try_spawn(&mut self, role: Role) -> Result<Child, String> {
        use nix::fcntl::{FcntlArg, FdFlag, fcntl};
        let (parent, child_end) =
            postern_sandbox::fdpass::seqpacket_pair().map_err(|e| e.to_string())?;
        // The child end survives exec; everything else we hold is CLOEXEC.
        // Spawns happen one at a time on this thread, so no other child can
        // inherit it by accident.
        fcntl(&child_end, FcntlArg::F_SETFD(FdFlag::empty())).map_err(|e| e.to_string())?;
        let fdnum = std::os::fd::AsRawFd::as_raw_fd(&child_end);
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.arg("daemon")
            .arg(role.name())
            .arg("--ipc-fd")
            .arg(fdnum.to_string())
            .env_clear()
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(false)
            // Its own process group: a terminal's ^C reaches only the
            // master, which then stops the daemons in order.
            .process_group(0);
        if let Ok(tz) = std::env::var("TZ") {
            cmd.env("TZ", tz);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("exec {}: {e}", self.exe.display()))?;
        drop(child_end);
        let pid = child.id().ok_or("child vanished")?;
        let epoch = self.next_epoch;
        self.next_epoch += 1;

        // Log lines from the child's stderr, read by the log collector.
        if let Some(err) = child.stderr.take() {
            let err = err
                .into_owned_fd()
                .map_err(|e| format!("{} log pipe: {e}", role.name()))?;
            self.sink
                .add_daemon(role.name(), pid, err)
                .map_err(|e| format!("{} log pipe: {e}", role.name()))?;
        }
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            let _ = tx.send(Event::Exited {
                role,
                epoch,
                status,
            });
        });

        // Control channel: a reader task and a writer task on two
        // descriptors of the same socket.
        let wfd = parent.try_clone().map_err(|e| e.to_string())?;
        let timeout = self
            .params
            .duration("ipc_query_timeout")
            .unwrap_or(Duration::from_secs(10));
        let mut reader = Channel::new(parent, <FromDaemon as Message>::MAX_FRAME, timeout)
            .map_err(|e| e.to_string())?;
        let writer = Channel::new(wfd, postern_ipc::master::MAX_FRAME, timeout)
            .map_err(|e| e.to_string())?;
        let tx = self.tx.clone();
        tokio::spawn(async move {
            loop {
                let ev = match reader.recv().await {
                    Ok((f, fds)) => match FromDaemon::decode(f, fds) {
                        Ok(msg) => Event::Msg { role, epoch, msg },
                        Err(e) => Event::Broken {
                            role,
                            epoch,
                            why: format!("protocol violation: {e}"),
                        },
                    },
                    Err(e) => Event::Broken {
                        role,
                        epoch,
                        why: e.to_string(),
                    },
                };
                let done = matches!(ev, Event::Broken { .. });
                if tx.send(ev).is_err() || done {
                    return;
                }
            }
        });
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<ToDaemon>();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                let fds: Vec<_> = m.fds();
                if let Err(e) = writer.send(&m.encode(), &fds).await {
                    let _ = tx.send(Event::Broken {
                        role,
                        epoch,
                        why: format!("cannot write: {e}"),
                    });
                    return;
                }
            }
        });

        let setup = self.setup_for(role)?;
        let _ = out_tx.send(ToDaemon::Setup(setup));
        Ok(Child {
            epoch,
            pid,
            out: out_tx,
            ready: None,
            open_conns: 0,
            started: Instant::now(),
            draining: false,
            ping: None,
        })
    }

    pub(super) fn setup_for(&self, role: Role) -> Result<Setup, String> {
        let mut listeners = Vec::new();
        if roles::spec(role).is_some_and(|s| s.listeners) {
            let default = self.params.int("default_process_limit").unwrap_or(100);
            for b in self
                .listeners
                .iter()
                .filter(|b| b.service.role.unwrap_or(Role::Smtpd) == role)
            {
                // master.cf maxproc; "-" is default_process_limit, as in Postfix.
                let maxproc = b
                    .service
                    .maxproc
                    .unwrap_or(u32::try_from(default).unwrap_or(100));
                for (_, sock) in &b.sockets {
                    listeners.push(ListenerInfo {
                        service: b.service.name.clone(),
                        params: b.params.clone(),
                        maxproc,
                        fd: OwnedFd::from(sock.try_clone().map_err(|e| e.to_string())?),
                    });
                }
            }
        }
        if role == Role::Metrics {
            for sock in &self.metrics_sockets {
                listeners.push(ListenerInfo {
                    service: "metrics".into(),
                    params: Vec::new(),
                    maxproc: 0,
                    fd: OwnedFd::from(sock.try_clone().map_err(|e| e.to_string())?),
                });
            }
        }
        if role == Role::Pickup
            && let Some(s) = &self.pickup_socket
        {
            listeners.push(ListenerInfo {
                service: "pickup".into(),
                params: Vec::new(),
                maxproc: 0,
                fd: s.try_clone().map_err(|e| e.to_string())?,
            });
        }
        // smtpd serves the pass services too: the clients postscreen hands
        // it, each with its service's settings and session limit.
        let mut passes = Vec::new();
        if role == Role::Smtpd {
            let default = self.params.int("default_process_limit").unwrap_or(100);
            for svc in self
                .cfg
                .services
                .iter()
                .filter(|s| s.kind == postern_config::ServiceType::Pass)
            {
                let params = if svc.overrides.is_empty() {
                    Vec::new()
                } else {
                    self.cfg
                        .params_with(&svc.overrides)
                        .map(|p| p.slice(Role::Smtpd))
                        .unwrap_or_default()
                };
                passes.push(PassInfo {
                    service: svc.name.clone(),
                    params,
                    maxproc: svc.maxproc.unwrap_or(u32::try_from(default).unwrap_or(100)),
                });
            }
        }
        Ok(Setup {
            role: role.name().into(),
            params: self.params.slice(role),
            listeners,
            passes,
        })
    }

    pub(super) fn schedule_restart(&mut self, role: Role, delay: Duration) {
        let slot = self.slots.get_mut(&role).expect("slot");
        if slot.restart_scheduled || self.stopping {
            return;
        }
        slot.restart_scheduled = true;
        self.after(delay, Event::Restart { role });
    }

    pub(super) fn kill(pid: u32, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
    }
}
