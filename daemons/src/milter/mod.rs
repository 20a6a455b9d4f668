//! milter: the client side of the Milter protocol (libmilter's, version
//! 6) for `smtpd_milters` and `non_smtpd_milters`. It is the only process
//! that talks to Milters: its jail allows TCP connections to the ports of
//! the configured Milters and nothing else, and the master connects to
//! Unix-socket Milters for it.
//!
//! For mail from SMTP clients, smtpd opens a session at the client's
//! connect (one connection to each of smtpd_milters) and sends CONNECT,
//! HELO, MAIL and each RCPT as they happen, so a Milter refuses a
//! recipient at RCPT time; at the end of DATA cleanup attaches to each
//! Milter of the session in turn (by the session's ticket) and sends it
//! the message as queued (headers one by one, end of headers, body
//! chunks) and the end of the message. The conversation then serves the
//! session's next transaction. For mail from sendmail, cleanup holds one
//! conversation per Milter and message that replays the SMTP events. The changes a Milter asks for at the end come back to
//! cleanup as the Milter's own packets, checked here and again there;
//! cleanup applies them to the queue file only once the Milter's verdict
//! has come, so a Milter that dies half-way through its changes leaves
//! nothing of them.
//!
//! A Milter is an untrusted peer: every packet is read by the bounded
//! parser of `proto::milter` (fuzzed as `milter_reply`), each step has
//! its deadline (milter_connect_timeout for the connection and option
//! negotiation, milter_command_timeout for SMTP events,
//! milter_content_timeout for the message), and any failure ends the
//! conversation with the Milter's default action, as Postfix's milter8.

mod conv;

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::{OwnedFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use postern_config::milter::{DefaultAction, MilterSpec};
use postern_config::tables::Endpoint;
use postern_config::{Params, Role};
use postern_ipc::ChannelError;
use postern_ipc::milter::{self as ml, Outcome, Request, Verdict};
use postern_proto::milter::Stage;

use crate::daemon::{self, Context, Switchboard};
use crate::warn;
use conv::Conv;

/// The TCP ports the milter role may connect to.
pub fn ports(params: &Params) -> Vec<u16> {
    let mut v: Vec<u16> = postern_config::milter::configured(params)
        .iter()
        .filter_map(|m| match m.endpoint {
            Endpoint::Inet(a) => Some(a.port()),
            Endpoint::Unix(_) => None,
        })
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

pub(super) struct Settings {
    /// Every configured Milter, by its entry.
    milters: HashMap<String, MilterSpec>,
    /// smtpd_milters, in order.
    smtpd: Vec<String>,
    pub(super) protocol: u32,
    pub(super) connect_timeout: Duration,
    pub(super) command_timeout: Duration,
    pub(super) content_timeout: Duration,
    pub(super) default_action: DefaultAction,
    /// milter_*_macros, by stage.
    pub(super) macros: Vec<(Stage, Vec<String>)>,
    pub(super) daemon_name: String,
    pub(super) v: String,
    pub(super) body_limit: u64,
}

impl Settings {
    fn new(p: &Params) -> Settings {
        let mut milters = HashMap::new();
        let smtpd: Vec<String> = p
            .list("smtpd_milters")
            .unwrap_or_default()
            .iter()
            .map(|e| e.trim().to_string())
            .filter(|e| postern_config::milter::parse(e).is_ok())
            .collect();
        for class in [
            postern_config::milter::Class::Smtpd,
            postern_config::milter::Class::NonSmtpd,
        ] {
            for item in p.list(class.param()).unwrap_or_default() {
                if let Ok(m) = postern_config::milter::parse(&item) {
                    milters.insert(item.trim().to_string(), m);
                }
            }
        }
        let d = |n: &str, dflt: u64| p.duration(n).unwrap_or(Duration::from_secs(dflt));
        let words = |n: &str| -> Vec<String> {
            p.str(n)
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|w| !w.is_empty())
                .map(str::to_string)
                .collect()
        };
        Settings {
            milters,
            smtpd,
            protocol: p.int("milter_protocol").unwrap_or(6).clamp(2, 6) as u32,
            connect_timeout: d("milter_connect_timeout", 30),
            command_timeout: d("milter_command_timeout", 30),
            content_timeout: d("milter_content_timeout", 300),
            default_action: DefaultAction::parse(p.str("milter_default_action"))
                .unwrap_or(DefaultAction::Shutdown),
            macros: vec![
                (Stage::Connect, words("milter_connect_macros")),
                (Stage::Helo, words("milter_helo_macros")),
                (Stage::Mail, words("milter_mail_macros")),
                (Stage::Rcpt, words("milter_rcpt_macros")),
                (Stage::Data, words("milter_data_macros")),
                (Stage::EndOfHeaders, words("milter_end_of_header_macros")),
                (Stage::EndOfMessage, words("milter_end_of_data_macros")),
            ],
            daemon_name: p.str("milter_macro_daemon_name").to_string(),
            v: p.str("milter_macro_v").to_string(),
            body_limit: p.size("message_size_limit").unwrap_or(10_240_000),
        }
    }
}

pub fn main(ipc_fd: RawFd) -> ! {
    daemon::run(Role::Milter, ipc_fd, |params: &Params| {
        let s = Rc::new(Settings::new(params));
        Ok((move |ctx: Context| serve(ctx, s), Vec::new()))
    })
}

/// smtpd sessions, by ticket.
type Sessions = Rc<RefCell<HashMap<u64, Session>>>;

/// One smtpd session's Milters, in the order of smtpd_milters.
struct Session {
    slots: Vec<Slot>,
}

enum Slot {
    /// The conversation, between events.
    Ready(Box<Conv>),
    /// cleanup holds it for the end of a message.
    Attached,
    /// Done for this session: it accepted the connection, or failed
    /// with default_action = accept.
    Done,
    /// It failed: every later event gets its default action.
    Failed(Verdict),
}

async fn serve(mut ctx: Context, s: Rc<Settings>) {
    let sb = ctx.switchboard.clone();
    let sessions: Sessions = Rc::default();
    daemon::serve_channels(&mut ctx, |from, fd| {
        channel(s.clone(), sb.clone(), sessions.clone(), from, fd)
    })
    .await;
}

pub(super) type Ep = postern_ipc::Endpoint<ml::Reply, ml::Request>;

/// What a channel is doing.
enum Mode {
    Idle,
    /// cleanup's own conversation (mail from sendmail).
    Single(Box<Conv>),
    /// smtpd's session.
    Session(u64),
    /// cleanup holds one Milter of a session: (ticket, index).
    Attached(u64, usize, Box<Conv>),
}

async fn channel(s: Rc<Settings>, sb: Switchboard, sessions: Sessions, from: Role, fd: OwnedFd) {
    let Some(mut ep) =
        crate::edges::accept::<ml::Link>(Role::Milter, from, fd, s.content_timeout).await
    else {
        return;
    };
    let mut mode = Mode::Idle;
    loop {
        let req = match ep.recv().await {
            Ok(r) => r,
            Err(ChannelError::Closed) => break,
            Err(e) => {
                crate::edges::dropped(ml::EDGE, from, &e);
                break;
            }
        };
        let reply = match (req, &mut mode) {
            (Request::Open(o), _) if from == Role::Cleanup => {
                end_mode(std::mem::replace(&mut mode, Mode::Idle), &sessions).await;
                let Some(spec) = s.milters.get(o.milter.trim()) else {
                    warn!(
                        "protocol violation from {from}: a conversation with {}, which is not a configured Milter; channel dropped",
                        o.milter
                    );
                    break;
                };
                let (c, v) = replay(&s, &sb, spec, o).await;
                if let Some(c) = c {
                    mode = Mode::Single(c);
                }
                Some(v)
            }
            (Request::Session(o), Mode::Idle) if from == Role::Smtpd => {
                let (ticket, v) = open_session(&s, &sb, &sessions, o).await;
                mode = Mode::Session(ticket);
                Some(v)
            }
            (Request::Helo(h), Mode::Session(t)) => Some(each(&sessions, *t, Event::Helo(h)).await),
            (Request::Mail(a), Mode::Session(t)) => Some(each(&sessions, *t, Event::Mail(a)).await),
            (Request::Macros(m), Mode::Session(t)) => {
                if let Some(sess) = sessions.borrow_mut().get_mut(t) {
                    for slot in &mut sess.slots {
                        if let Slot::Ready(c) = slot {
                            c.set_macros(&m);
                        }
                    }
                }
                None
            }
            (Request::Rcpt(a), Mode::Session(t)) => Some(each(&sessions, *t, Event::Rcpt(a)).await),
            (Request::Rcpt(a), Mode::Single(c)) => Some(c.rcpt(&a).await),
            // smtpd's session is over; the channel waits for another.
            (Request::Close, Mode::Session(_)) => {
                end_mode(std::mem::replace(&mut mode, Mode::Idle), &sessions).await;
                None
            }
            (Request::Attach { ticket, milter }, _) if from == Role::Cleanup => {
                end_mode(std::mem::replace(&mut mode, Mode::Idle), &sessions).await;
                let (m, v) = attach(&sessions, ticket, &milter);
                mode = m;
                Some(v)
            }
            (Request::Content(d), Mode::Single(c) | Mode::Attached(_, _, c)) => {
                c.content(&d).await;
                None
            }
            (Request::Content(_), Mode::Idle) => None,
            (Request::End, Mode::Single(_) | Mode::Attached(..)) => {
                let v = match std::mem::replace(&mut mode, Mode::Idle) {
                    Mode::Single(mut c) => {
                        let v = c.end(&mut ep).await;
                        c.quit().await;
                        v
                    }
                    Mode::Attached(t, i, mut c) => {
                        let v = c.end(&mut ep).await;
                        give_back(&sessions, t, i, c).await;
                        v
                    }
                    _ => Verdict::of(Outcome::Accept),
                };
                Some(v)
            }
            (Request::End, Mode::Idle) => Some(Verdict::of(Outcome::Accept)),
            (req, _) => {
                warn!(
                    "protocol violation from {from}: {} out of place; channel dropped",
                    name(&req)
                );
                break;
            }
        };
        if let Some(v) = reply
            && ep.send(&ml::Reply::Verdict(v)).await.is_err()
        {
            break;
        }
    }
    end_mode(mode, &sessions).await;
}

fn name(r: &Request) -> &'static str {
    match r {
        Request::Open(_) => "open",
        Request::Rcpt(_) => "rcpt",
        Request::Content(_) => "content",
        Request::End => "end",
        Request::Session(_) => "session",
        Request::Helo(_) => "helo",
        Request::Mail(_) => "mail",
        Request::Macros(_) => "macros",
        Request::Attach { .. } => "attach",
        Request::Close => "close",
    }
}

/// An SMTP event of a session.
enum Event {
    Helo(String),
    Mail(Vec<String>),
    Rcpt(String),
}

static NEXT_TICKET: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// smtpd's session: a connection to each of smtpd_milters, and CONNECT.
/// The first Milter that does not go on decides (as Postfix's milters
/// are asked in order).
async fn open_session(
    s: &Rc<Settings>,
    sb: &Switchboard,
    sessions: &Sessions,
    o: ml::Open,
) -> (u64, Verdict) {
    let ticket = NEXT_TICKET.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut slots = Vec::with_capacity(s.smtpd.len());
    let mut decided: Option<Verdict> = None;
    for entry in &s.smtpd {
        let Some(spec) = s.milters.get(entry) else {
            slots.push(Slot::Done);
            continue;
        };
        if decided.is_some() {
            // Not asked once an earlier Milter refused the connection.
            slots.push(Slot::Done);
            continue;
        }
        let (slot, v) = match Conv::connect(s, sb, spec, entry, &o.macros).await {
            Ok(c) => {
                let mut c = Box::new(c);
                let v = c.connect_event(&o.host, &o.addr, o.port).await;
                if matches!(v.outcome, Outcome::Reject | Outcome::Tempfail) {
                    // It refused the connection: every later event gets
                    // that answer, as Postfix's milter8 does.
                    c.quit().await;
                    (Slot::Failed(v.clone()), v)
                } else {
                    settle(c, v).await
                }
            }
            Err(v) => (failed_slot(&v), v),
        };
        slots.push(slot);
        if !matches!(v.outcome, Outcome::Continue | Outcome::Accept) {
            decided = Some(v);
        }
    }
    sessions.borrow_mut().insert(ticket, Session { slots });
    let mut v = decided.unwrap_or_else(|| Verdict::of(Outcome::Continue));
    v.ticket = ticket;
    (ticket, v)
}

/// Where a conversation goes after a connection-level event.
async fn settle(c: Box<Conv>, v: Verdict) -> (Slot, Verdict) {
    if c.is_broken() {
        let slot = failed_slot(&v);
        c.quit().await;
        return (slot, v);
    }
    if v.outcome == Outcome::Accept {
        // It accepted the connection: nothing more for it.
        c.quit().await;
        return (Slot::Done, v);
    }
    (Slot::Ready(c), v)
}

fn failed_slot(v: &Verdict) -> Slot {
    if v.outcome == Outcome::Accept && v.quarantine.is_empty() {
        Slot::Done
    } else {
        Slot::Failed(v.clone())
    }
}

/// One event to every Milter of the session still in it, in order; the
/// first that does not go on decides, and the ones after it are not
/// asked.
async fn each(sessions: &Sessions, ticket: u64, ev: Event) -> Verdict {
    let n = sessions.borrow().get(&ticket).map_or(0, |s| s.slots.len());
    for i in 0..n {
        let slot = {
            let mut all = sessions.borrow_mut();
            let Some(sess) = all.get_mut(&ticket) else {
                break;
            };
            std::mem::replace(&mut sess.slots[i], Slot::Attached)
        };
        let (slot, v) = match slot {
            Slot::Ready(mut c) => {
                let v = match &ev {
                    Event::Helo(h) => c.helo(h).await,
                    Event::Mail(a) => c.mail(a).await,
                    Event::Rcpt(a) => c.rcpt(a).await,
                };
                if matches!(ev, Event::Helo(_)) {
                    settle(c, v).await
                } else if c.is_broken() {
                    let slot = failed_slot(&v);
                    c.quit().await;
                    (slot, v)
                } else {
                    (Slot::Ready(c), v)
                }
            }
            Slot::Failed(v) => (Slot::Failed(v.clone()), v),
            other => (other, Verdict::of(Outcome::Continue)),
        };
        if let Some(sess) = sessions.borrow_mut().get_mut(&ticket) {
            sess.slots[i] = slot;
        }
        if !matches!(v.outcome, Outcome::Continue | Outcome::Accept) {
            return v;
        }
    }
    Verdict::of(Outcome::Continue)
}

/// cleanup takes one Milter of a session for the end of a message.
fn attach(sessions: &Sessions, ticket: u64, milter: &str) -> (Mode, Verdict) {
    let mut all = sessions.borrow_mut();
    let Some(sess) = all.get_mut(&ticket) else {
        // smtpd's session is gone (the client left): nothing to attach.
        let mut v = Verdict::of(Outcome::Tempfail);
        v.failure = "the SMTP session is gone".into();
        return (Mode::Idle, v);
    };
    let milter = milter.trim();
    let found = sess.slots.iter().position(|sl| match sl {
        Slot::Ready(c) => c.entry == milter,
        _ => false,
    });
    match found {
        Some(i) => match std::mem::replace(&mut sess.slots[i], Slot::Attached) {
            Slot::Ready(c) => (Mode::Attached(ticket, i, c), Verdict::of(Outcome::Continue)),
            other => {
                sess.slots[i] = other;
                (Mode::Idle, Verdict::of(Outcome::Accept))
            }
        },
        None => {
            // Failed earlier: its default action again; done: nothing.
            let failed = sess.slots.iter().find_map(|sl| match sl {
                Slot::Failed(v) => Some(v.clone()),
                _ => None,
            });
            (
                Mode::Idle,
                failed.unwrap_or_else(|| Verdict::of(Outcome::Accept)),
            )
        }
    }
}

/// A conversation cleanup used goes back to its session for the next
/// transaction, or ends when it failed or the session is gone.
async fn give_back(sessions: &Sessions, ticket: u64, i: usize, c: Box<Conv>) {
    let c = {
        let mut all = sessions.borrow_mut();
        match all.get_mut(&ticket).and_then(|s| s.slots.get_mut(i)) {
            Some(slot @ Slot::Attached) if !c.is_broken() => {
                *slot = Slot::Ready(c);
                return;
            }
            Some(slot @ Slot::Attached) => {
                *slot = Slot::Done;
                c
            }
            _ => c,
        }
    };
    c.quit().await;
}

/// A channel ends: its conversations end, or go back to their session.
async fn end_mode(mode: Mode, sessions: &Sessions) {
    match mode {
        Mode::Idle => {}
        Mode::Single(c) => c.quit().await,
        Mode::Attached(t, i, c) => give_back(sessions, t, i, c).await,
        Mode::Session(t) => {
            let gone = sessions.borrow_mut().remove(&t);
            for slot in gone.map(|s| s.slots).unwrap_or_default() {
                if let Slot::Ready(c) = slot {
                    c.quit().await;
                }
            }
        }
    }
}

/// cleanup's own conversation for mail from sendmail: CONNECT, HELO and
/// MAIL replayed.
async fn replay(
    s: &Rc<Settings>,
    sb: &Switchboard,
    spec: &MilterSpec,
    o: ml::Open,
) -> (Option<Box<Conv>>, Verdict) {
    let mut c = match Conv::connect(s, sb, spec, &o.milter, &o.macros).await {
        Ok(c) => Box::new(c),
        Err(v) => return (None, v),
    };
    let v = c.connect_event(&o.host, &o.addr, o.port).await;
    if v.outcome != Outcome::Continue {
        c.quit().await;
        return (None, v);
    }
    let v = c.helo(&o.helo).await;
    if v.outcome != Outcome::Continue {
        c.quit().await;
        return (None, v);
    }
    let v = c.mail(&o.mail).await;
    if v.outcome != Outcome::Continue {
        c.quit().await;
        return (None, v);
    }
    (Some(c), v)
}
