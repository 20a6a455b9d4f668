//! cache: the persistent state store. It alone owns `$data_directory/cache`
//! (landlock names nothing else); other roles reach it only over the
//! `cache` edge, one namespace per kind of state, each written only by the
//! role that owns it. Records live in memory and are saved, one file per
//! namespace, a moment after they change and when the process stops, so
//! they survive a reload, a restart or a crash of the role that uses them.
//! Started on first use.
pub mod client;
mod store;

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::{OwnedFd, RawFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use postern_config::Role;
use postern_ipc::cache::{self, Op, Reply, Request};
use postern_ipc::edge::Answer;

use crate::daemon::{self, Context};
use crate::{info, warn};
pub use store::NAMESPACES;
use store::{Space, check_access};

/// How long changes gather before a save.
const SAVE_DELAY: Duration = Duration::from_secs(1);

pub fn main(ipc_fd: RawFd) -> ! {
    daemon::run(Role::Cache, ipc_fd, |_params| Ok((serve, Vec::new())))
}

fn now() -> u64 {
    crate::clock::now_us() / 1_000_000
}

struct State {
    dir: PathBuf,
    spaces: HashMap<&'static str, Space>,
}

impl State {
    fn file(&self, ns: &str) -> PathBuf {
        self.dir.join(format!("{ns}.db"))
    }

    /// Loads every namespace file, logging what was dropped.
    fn load(dir: PathBuf) -> State {
        let mut st = State {
            dir,
            spaces: HashMap::new(),
        };
        for ns in NAMESPACES {
            let mut space = Space::new(ns);
            let path = st.file(ns.name);
            match crate::fsutil::read_path(&path, space.max_file()) {
                Ok(data) => {
                    let rep = space.load(&data, now());
                    if rep.corrupt > 0 {
                        warn!(
                            "{}: {} corrupt record(s) dropped",
                            path.display(),
                            rep.corrupt
                        );
                    }
                    if let Some(why) = &rep.stopped {
                        warn!("{}: {why}: the rest is dropped", path.display());
                    }
                    if rep.loaded > 0 {
                        info!("{}: {} record(s)", path.display(), rep.loaded);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => warn!("{}: {e}: starting empty", path.display()),
            }
            st.spaces.insert(ns.name, space);
        }
        st
    }

    /// Writes every changed namespace (whole, atomically, fsynced).
    fn save(&mut self) {
        let t = now();
        let dir = self.dir.clone();
        for space in self.spaces.values_mut().filter(|s| s.dirty) {
            let path = dir.join(format!("{}.db", space.ns.name));
            match crate::fsutil::write_atomically(&path, &space.encode(t), None) {
                Ok(()) => space.dirty = false,
                Err(e) => warn!("cannot save {}: {e}", path.display()),
            }
        }
    }

    fn answer(&mut self, role: Role, req: Request) -> Result<Reply, String> {
        let write = !matches!(req.op, Op::Get);
        let ns = check_access(role, &req.namespace, write)?;
        let space = self
            .spaces
            .get_mut(ns.name)
            .ok_or_else(|| format!("namespace {} not loaded", ns.name))?;
        let t = now();
        Ok(match req.op {
            Op::Get => match space.get(&req.key, t) {
                Some((value, left)) => Reply::Found {
                    value,
                    expires_in: left.min(u64::from(cache::MAX_TTL)) as u32,
                },
                None => Reply::NotFound,
            },
            Op::Put { value, .. } if value.len() > ns.max_value => {
                Reply::Refused(format!("value over {} bytes", ns.max_value))
            }
            Op::Put { value, ttl_seconds } => {
                space.put(req.key, value, t + u64::from(ttl_seconds), t);
                Reply::Done
            }
            Op::Delete => {
                space.delete(&req.key);
                Reply::Done
            }
        })
    }
}

async fn serve(mut ctx: Context) {
    let dir = crate::paths::cache_dir(&ctx.params);
    let st = Rc::new(RefCell::new(State::load(dir)));
    let dirty = Rc::new(tokio::sync::Notify::new());
    let timeout = ctx.query_timeout();
    let local = tokio::task::LocalSet::new();
    let saver = st.clone();
    let changed = dirty.clone();
    local.spawn_local(async move {
        loop {
            changed.notified().await;
            // Gather a moment's changes into one write.
            tokio::time::sleep(SAVE_DELAY).await;
            saver.borrow_mut().save();
        }
    });
    let last = st.clone();
    local
        .run_until(async move {
            loop {
                tokio::select! {
                    c = ctx.inbound.recv() => match c {
                        Some((role, fd)) => {
                            tokio::task::spawn_local(conn(st.clone(), dirty.clone(), role, fd, timeout));
                        }
                        None => break,
                    },
                    _ = ctx.shutdown.changed() => break,
                }
            }
        })
        .await;
    last.borrow_mut().save();
}

async fn conn(
    st: Rc<RefCell<State>>,
    dirty: Rc<tokio::sync::Notify>,
    role: Role,
    fd: OwnedFd,
    timeout: Duration,
) {
    crate::edges::serve::<cache::Link, _, _>(Role::Cache, role, fd, timeout, |req| {
        let answer = match st.borrow_mut().answer(role, req) {
            Ok(r) => {
                if matches!(r, Reply::Done) {
                    dirty.notify_one();
                }
                Answer::Reply(r)
            }
            // Outside its namespaces: a bug or a compromise. Say no, then
            // drop the channel.
            Err(why) => {
                warn!("refused: {why}");
                Answer::Last(Reply::Refused(why))
            }
        };
        std::future::ready(answer)
    })
    .await;
}
