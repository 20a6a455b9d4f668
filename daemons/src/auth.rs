//! auth: checks SASL credentials for smtpd. The only process that reads
//! the password hashes (landlock gives it the password file's directory,
//! read-only, and nothing else). Argon2 runs on a small blocking pool so a
//! burst of logins cannot stall the event loop or exhaust memory, and
//! failures are limited per client address and per account. The failures
//! are kept in the state store too (namespace `auth-failures`), so a
//! reload or a crash of auth does not hand an attacker a fresh budget.
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::os::fd::{OwnedFd, RawFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use postern_config::Role;
use postern_ipc::auth::{self, Reply, Request};
use postern_ipc::edge::Answer;
use tokio::sync::Semaphore;

use crate::cache::client::Client as Store;
use crate::daemon::{self, Context};
use crate::{fatal, passwd, warn};

/// Argon2 checks at once (each uses about 19 MiB for a few tens of ms).
const PARALLEL: usize = 2;
/// Most clients and accounts whose failures we remember.
const MAX_TRACKED: usize = 10_000;
/// Most failures read back from one stored record.
const MAX_PER_KEY: usize = 100;
/// The state-store namespace of the failure counts.
const NAMESPACE: &str = "auth-failures";

pub fn main(ipc_fd: RawFd) -> ! {
    daemon::run(Role::Auth, ipc_fd, |_params| Ok((serve, Vec::new())))
}

/// Recent failures per key, within the window.
#[derive(Default)]
struct Failures {
    by: HashMap<String, VecDeque<Instant>>,
}

impl Failures {
    fn prune(&mut self, window: Duration) {
        let now = Instant::now();
        if self.by.len() > MAX_TRACKED / 2 {
            self.by
                .retain(|_, q| q.back().is_some_and(|t| now - *t < window));
        }
        if self.by.len() >= MAX_TRACKED {
            // Still full of live entries: forget the oldest half.
            let mut v: Vec<(String, Instant)> = self
                .by
                .iter()
                .filter_map(|(k, q)| Some((k.clone(), *q.back()?)))
                .collect();
            v.sort_by_key(|x| x.1);
            for (k, _) in v.into_iter().take(MAX_TRACKED / 2) {
                self.by.remove(&k);
            }
        }
    }

    /// Seconds until `key` may try again, when it is over `limit`.
    fn locked(&mut self, key: &str, limit: usize, window: Duration) -> Option<u32> {
        let q = self.by.get_mut(key)?;
        let now = Instant::now();
        while q.front().is_some_and(|t| now - *t >= window) {
            q.pop_front();
        }
        if q.len() < limit {
            return None;
        }
        let oldest = *q.front()?;
        Some((window.saturating_sub(now - oldest)).as_secs().max(1) as u32)
    }

    fn add(&mut self, key: &str) {
        self.by
            .entry(key.to_string())
            .or_default()
            .push_back(Instant::now());
    }

    fn known(&self, key: &str) -> bool {
        self.by.contains_key(key)
    }

    /// The failures of `key` as a store record: Unix seconds, oldest first.
    fn record(&self, key: &str) -> Vec<u8> {
        let (now, unix) = (Instant::now(), crate::clock::now_us() / 1_000_000);
        let times: Vec<u64> = self.by.get(key).map_or(Vec::new(), |q| {
            q.iter()
                .map(|t| unix.saturating_sub(now.duration_since(*t).as_secs()))
                .collect()
        });
        postcard::to_allocvec(&times).unwrap_or_default()
    }

    /// Takes a store record for `key` (an empty one when the store had
    /// none, so the store is asked once per key).
    fn restore(&mut self, key: &str, record: Option<&[u8]>) {
        let (now, unix) = (Instant::now(), crate::clock::now_us() / 1_000_000);
        let times: Vec<u64> = record
            .and_then(|r| postcard::from_bytes(r).ok())
            .unwrap_or_default();
        let q = times
            .iter()
            .take(MAX_PER_KEY)
            .filter_map(|t| now.checked_sub(Duration::from_secs(unix.saturating_sub(*t))))
            .collect();
        self.by.insert(key.to_string(), q);
    }

    /// Forgets `key`'s failures; true when it had any.
    fn clear(&mut self, key: &str) -> bool {
        self.by.remove(key).is_some_and(|q| !q.is_empty())
    }
}

struct State {
    file: PathBuf,
    table: Option<(passwd::FileId, Rc<passwd::Table>)>,
    clients: Failures,
    accounts: Failures,
    client_limit: usize,
    account_limit: usize,
    window: Duration,
    /// A hash to check unknown users against, so they take as long.
    dummy: String,
}

impl State {
    /// The table, read again whenever the file changed.
    fn table(&mut self) -> Result<Rc<passwd::Table>, String> {
        let id = passwd::file_id(&self.file);
        if let (Some(id), Some((cached, t))) = (id, &self.table)
            && id == *cached
        {
            return Ok(t.clone());
        }
        let Some(id) = id else {
            // No file yet: nobody can log in, which is not an error.
            self.table = None;
            return Ok(Rc::new(passwd::Table::new()));
        };
        let text = crate::fsutil::read_path_string(&self.file, crate::fsutil::TABLE_FILE_CAP)
            .map_err(|e| format!("cannot read {}: {e}", self.file.display()))?;
        let t = Rc::new(passwd::parse(&text, &self.file)?);
        self.table = Some((id, t.clone()));
        Ok(t)
    }
}

async fn serve(mut ctx: Context) {
    let p = &ctx.params;
    let int = |n: &str| p.int(n).unwrap_or(10).max(1) as usize;
    let dummy = match passwd::hash(b"not a password anyone has") {
        Ok(h) => h,
        Err(e) => fatal!("cannot prepare: {e}"),
    };
    let st = Rc::new(RefCell::new(State {
        file: PathBuf::from(p.str("smtpd_sasl_password_file")),
        table: None,
        clients: Failures::default(),
        accounts: Failures::default(),
        client_limit: int("smtpd_sasl_client_failure_limit"),
        account_limit: int("smtpd_sasl_account_failure_limit"),
        window: p
            .duration("smtpd_sasl_failure_window")
            .unwrap_or(Duration::from_secs(300)),
        dummy,
    }));
    let pool = Rc::new(Semaphore::new(PARALLEL));
    let store = Rc::new(Store::new(ctx.switchboard.clone(), NAMESPACE));
    let timeout = ctx.query_timeout();
    crate::daemon::serve_channels(&mut ctx, |from, fd| {
        let (st, pool, store) = (st.clone(), pool.clone(), store.clone());
        async move {
            match from {
                Role::Smtpd => conn(st, pool, store, fd, timeout).await,
                other => warn!("unexpected channel from {other}"),
            }
        }
    })
    .await;
}

async fn conn(
    st: Rc<RefCell<State>>,
    pool: Rc<Semaphore>,
    store: Rc<Store>,
    fd: OwnedFd,
    timeout: Duration,
) {
    crate::edges::serve::<auth::Link, _, _>(Role::Auth, Role::Smtpd, fd, timeout, |req| {
        let (st, pool, store) = (st.clone(), pool.clone(), store.clone());
        async move { Answer::Reply(check(&st, &pool, &store, req).await) }
    })
    .await;
}

/// Store keys of the two counts a login touches.
fn store_keys(req: &Request) -> (String, String) {
    (
        format!("client:{}", req.client),
        format!("account:{}", req.username),
    )
}

/// Reads the counts of a client and an account from the store, the first
/// time this process sees them.
async fn restore(st: &Rc<RefCell<State>>, store: &Store, req: &Request) {
    let (ck, ak) = store_keys(req);
    if !st.borrow().clients.known(&req.client) {
        let r = store.get(&ck).await;
        st.borrow_mut()
            .clients
            .restore(&req.client, r.as_ref().map(|(v, _)| v.as_slice()));
    }
    if !st.borrow().accounts.known(&req.username) {
        let r = store.get(&ak).await;
        st.borrow_mut()
            .accounts
            .restore(&req.username, r.as_ref().map(|(v, _)| v.as_slice()));
    }
}

async fn check(st: &Rc<RefCell<State>>, pool: &Semaphore, store: &Store, req: Request) -> Reply {
    restore(st, store, &req).await;
    let (hash, known) = {
        let mut s = st.borrow_mut();
        let (window, cl, al) = (s.window, s.client_limit, s.account_limit);
        s.clients.prune(window);
        s.accounts.prune(window);
        if let Some(secs) = s.clients.locked(&req.client, cl, window) {
            return Reply::Locked(secs);
        }
        if let Some(secs) = s.accounts.locked(&req.username, al, window) {
            return Reply::Locked(secs);
        }
        let table = match s.table() {
            Ok(t) => t,
            Err(e) => {
                warn!("{e}");
                return Reply::Tempfail("password file unreadable".into());
            }
        };
        match table.get(&req.username) {
            Some(h) => (h.clone(), true),
            None => (s.dummy.clone(), false),
        }
    };
    let Ok(_permit) = pool.acquire().await else {
        return Reply::Tempfail("shutting down".into());
    };
    let password = req.password.clone();
    let ok = tokio::task::spawn_blocking(move || passwd::verify(&hash, &password))
        .await
        .unwrap_or(false);
    let (ck, ak) = store_keys(&req);
    if ok && known {
        // The store mirrors memory (restored above): only counts that
        // exist need deleting.
        let (had_client, had_account) = {
            let mut s = st.borrow_mut();
            (
                s.clients.clear(&req.client),
                s.accounts.clear(&req.username),
            )
        };
        if had_client {
            store.delete(&ck).await;
        }
        if had_account {
            store.delete(&ak).await;
        }
        return Reply::Ok(req.username);
    }
    let (client_rec, account_rec, window) = {
        let mut s = st.borrow_mut();
        s.clients.add(&req.client);
        s.accounts.add(&req.username);
        let (window, cl, al) = (s.window, s.client_limit, s.account_limit);
        if s.clients.locked(&req.client, cl, window).is_some() {
            warn!(
                "{} failed logins from [{}] within {}s: refusing its logins for a while",
                cl,
                req.client,
                window.as_secs()
            );
        } else if s.accounts.locked(&req.username, al, window).is_some() {
            warn!(
                "{} failed logins for account {} within {}s: refusing its logins for a while",
                al,
                req.username,
                window.as_secs()
            );
        }
        (
            s.clients.record(&req.client),
            s.accounts.record(&req.username),
            window,
        )
    };
    store.put(&ck, client_rec, window).await;
    store.put(&ak, account_rec, window).await;
    Reply::Failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_lock_after_the_limit_and_expire() {
        let mut f = Failures::default();
        let w = Duration::from_millis(200);
        for _ in 0..2 {
            f.add("1.2.3.4");
        }
        assert_eq!(f.locked("1.2.3.4", 3, w), None);
        f.add("1.2.3.4");
        assert!(f.locked("1.2.3.4", 3, w).is_some());
        assert_eq!(f.locked("5.6.7.8", 3, w), None);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(f.locked("1.2.3.4", 3, w), None);
    }

    #[test]
    fn tracking_is_bounded() {
        let mut f = Failures::default();
        for i in 0..MAX_TRACKED + 10 {
            f.add(&format!("k{i}"));
            f.prune(Duration::from_secs(300));
        }
        assert!(f.by.len() <= MAX_TRACKED);
    }
}
