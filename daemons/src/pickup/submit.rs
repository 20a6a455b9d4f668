//! The decision on one submission (who may submit, which sender, the
//! restrictions) and the message as it will be queued.
use super::*;
use crate::restrict::Outcome;
use crate::restrict::eval::Run;

/// A passwd entry: login name and the full name from GECOS.
pub(super) struct User {
    pub(super) name: String,
    gecos: String,
}

pub(super) async fn user(sh: &Shared, uid: u32) -> Result<User, Refusal> {
    let data = sh
        .tables
        .get(Path::new("/etc/passwd"), tables::Format::Passwd)
        .await
        .map_err(|e| refuse(EX_TEMPFAIL, format!("cannot read the user database: {e}")))?;
    let tables::Loaded::Passwd(text) = &*data else {
        return Err(refuse(
            EX_SOFTWARE,
            "the user database is not a passwd file",
        ));
    };
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 5 && f[2].parse::<u32>().ok() == Some(uid) {
            return Ok(User {
                name: f[0].to_string(),
                gecos: f[4].split(',').next().unwrap_or("").to_string(),
            });
        }
    }
    Err(refuse(
        EX_NOUSER,
        format!("no login name found for user ID {uid}"),
    ))
}

/// `authorized_submit_users`: names, `!name`, `static:anyone`, or tables
/// keyed by login name; the first match decides, no match refuses. The
/// decision is the master's `user_listed`; the tables are read first,
/// through the master, since pickup's jail has no /etc.
pub(super) async fn may_submit(sh: &Shared, login: &str) -> Result<bool, Refusal> {
    let list = &sh.set.submit_users;
    let mut found: Vec<(&str, Result<Option<String>, String>)> = Vec::new();
    for item in list
        .iter()
        .filter(|i| i.contains(':') && !i.starts_with('!'))
    {
        let t = tables::parse(item)
            .map_err(|e| refuse(EX_SOFTWARE, format!("authorized_submit_users: {e}")))?;
        if !matches!(t, Table::Static(_)) {
            let r = sh.tables.lookup(&t, login).await;
            found.push((item, r));
        }
    }
    tables::user_listed_with(list, login, |item, _| {
        found
            .iter()
            .find(|(x, _)| *x == item)
            .map_or(Ok(None), |(_, r)| r.clone())
    })
    .map_err(|e| {
        refuse(
            EX_TEMPFAIL,
            format!("authorized_submit_users lookup error: {e}"),
        )
    })
}

/// `local_login_sender_maps`: the login name (then `*`) maps to the sender
/// patterns it may use: `*`, `<>`, `@domain`, or whole addresses.
pub(super) async fn may_use_sender(
    sh: &Shared,
    login: &str,
    sender: &str,
) -> Result<bool, Refusal> {
    if sh.set.login_sender.is_empty() {
        return Ok(true);
    }
    let mut value = None;
    for key in [login, "*"] {
        match sh.tables.lookup_any(&sh.set.login_sender, key).await {
            Ok(Some(v)) => {
                value = Some(v);
                break;
            }
            Ok(None) => {}
            Err(e) => {
                return Err(refuse(
                    EX_TEMPFAIL,
                    format!("local_login_sender_maps lookup error: {e}"),
                ));
            }
        }
    }
    let Some(v) = value else { return Ok(false) };
    let sender = sender.to_ascii_lowercase();
    Ok(v.split([',', ' ', '\t'])
        .filter(|p| !p.is_empty())
        .any(|p| {
            let p = p.to_ascii_lowercase();
            p == "*"
                || (p == "<>" && sender.is_empty())
                || (p.starts_with('@') && !sender.is_empty() && sender.ends_with(&p))
                || p == sender
        }))
}

/// Qualifies a bare local part with `@myorigin`, as Postfix does for
/// local submissions; checks the result as an SMTP path would be.
pub(super) fn qualify(sh: &Shared, addr: &str, utf8: bool) -> Result<String, String> {
    let a = addr.trim();
    let a = a
        .strip_prefix('<')
        .and_then(|x| x.strip_suffix('>'))
        .unwrap_or(a);
    if a.is_empty() {
        return Ok(String::new());
    }
    let full = if a.contains('@') {
        a.to_string()
    } else {
        format!("{a}@{}", sh.set.myorigin)
    };
    postern_proto::address::parse_path(&full, utf8)
        .map(|m| m.address())
        .map_err(|e| format!("<{a}>: {e}"))
}

/// The addresses in To, Cc and Bcc (or Resent-To/Cc/Bcc when the message
/// has any Resent- header, as RFC 5322 section 3.6.6 intends).
pub(super) fn header_recipients(headers: &[u8]) -> Vec<String> {
    let Some(msg) = mail_parser::MessageParser::new().parse_headers(headers) else {
        return Vec::new();
    };
    let fields = header::fields(headers);
    let resent = fields
        .iter()
        .any(|f| f.name.len() > 7 && f.name[..7].eq_ignore_ascii_case("resent-"));
    let mut out = Vec::new();
    let wanted: &[&str] = if resent {
        &["Resent-To", "Resent-Cc", "Resent-Bcc"]
    } else {
        &["To", "Cc", "Bcc"]
    };
    for h in msg.headers() {
        if !wanted.iter().any(|w| h.name().eq_ignore_ascii_case(w)) {
            continue;
        }
        if let Some(list) = h.value().as_address() {
            // A bare word (`To: root`) parses as a name: it is an
            // unqualified local address, as sendmail has always read it.
            out.extend(list.iter().filter_map(|a| match (a.address(), a.name()) {
                (Some(addr), _) => Some(addr.to_string()),
                (None, Some(n)) if !n.contains(char::is_whitespace) && !n.is_empty() => {
                    Some(n.to_string())
                }
                _ => None,
            }));
        }
    }
    out
}

/// The message as it will be queued: Bcc removed under -t, a From header
/// added when there is none.
pub(super) fn rewrite(sub: &Submission, sender: &str, full_name: &str) -> Vec<u8> {
    let buf = &sub.content;
    let (hdr_end, body_start) = match header::split(buf, true) {
        Split::Done { headers, body } => (headers, body),
        Split::Incomplete => (buf.len(), buf.len()),
    };
    let fields = header::fields(&buf[..hdr_end]);
    let mut out = Vec::with_capacity(buf.len() + 128);
    let mut have_from = false;
    for f in &fields {
        if sub.begin.extract && (f.is("Bcc") || f.is("Resent-Bcc")) {
            continue;
        }
        have_from |= f.is("From");
        out.extend_from_slice(&f.raw);
        if !f.raw.ends_with(b"\n") {
            out.extend_from_slice(b"\r\n");
        }
    }
    if !have_from && !sender.is_empty() {
        let line = if full_name.is_empty() {
            format!("From: {sender}\r\n")
        } else {
            format!("From: {} <{sender}>\r\n", phrase(full_name))
        };
        out.extend_from_slice(line.as_bytes());
    }
    if body_start == hdr_end && hdr_end < buf.len() {
        // The body began with a non-header line: keep it a body.
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(&buf[hdr_end..]);
    out
}

/// A display name, quoted when it holds anything but atoms and spaces.
pub(super) fn phrase(name: &str) -> String {
    let plain = name
        .chars()
        .all(|c| c.is_alphanumeric() || c == ' ' || "!#$%&'*+-/=?^_`{|}~".contains(c));
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// Decides and, when allowed, queues one submission. Returns the queue id.
pub(super) async fn submit(sh: &Shared, uid: u32, sub: &Submission) -> Result<String, Refusal> {
    let user = user(sh, uid).await?;
    let login = user.name.as_str();
    if !may_submit(sh, login).await? {
        warn!("uid={uid}: User {login}({uid}) is not allowed to submit mail");
        return Err(refuse(
            EX_NOPERM,
            format!("User {login}({uid}) is not allowed to submit mail"),
        ));
    }
    if sub.too_big {
        return Err(refuse(EX_DATAERR, "Message file too big"));
    }
    if sub.too_many {
        return Err(refuse(EX_DATAERR, "Too many recipients"));
    }
    let b = &sub.begin;
    let utf8 = b.smtputf8;
    let sender = if b.sender_given {
        qualify(sh, &b.sender, utf8)
            .map_err(|e| refuse(EX_DATAERR, format!("bad sender address {e}")))?
    } else {
        qualify(sh, login, utf8)
            .map_err(|e| refuse(EX_DATAERR, format!("bad sender address {e}")))?
    };
    if !may_use_sender(sh, login, &sender).await? {
        warn!("uid={uid}: User {login}({uid}) is not allowed to use sender address <{sender}>");
        return Err(refuse(
            EX_NOPERM,
            format!("User {login}({uid}) is not allowed to use sender address <{sender}>"),
        ));
    }
    let mut rcpts = Vec::new();
    for r in &sub.recipients {
        rcpts.push(
            qualify(sh, r, utf8)
                .map_err(|e| refuse(EX_DATAERR, format!("bad recipient address {e}")))?,
        );
    }
    if b.extract {
        let hdr_end = match header::split(&sub.content, true) {
            Split::Done { headers, .. } => headers,
            Split::Incomplete => sub.content.len(),
        };
        if hdr_end > sh.set.header_size_limit {
            return Err(refuse(EX_DATAERR, "Message header size exceeds limit"));
        }
        for a in header_recipients(&sub.content[..hdr_end]) {
            match qualify(sh, &a, true) {
                Ok(q) if !q.is_empty() => rcpts.push(q),
                Ok(_) => {}
                Err(e) => warn!("uid={uid}: ignoring bad header recipient {e}"),
            }
        }
    }
    let mut seen = HashSet::new();
    rcpts.retain(|r| seen.insert(r.to_ascii_lowercase()));
    if rcpts.is_empty() {
        return Err(refuse(
            EX_USAGE,
            if b.extract {
                "No recipient addresses found in message header"
            } else {
                "Recipient addresses must be specified on the command line or via the -t option"
            },
        ));
    }
    if rcpts.len() > MAX_RECIPIENTS {
        return Err(refuse(EX_DATAERR, "Too many recipients"));
    }
    let Some(effects) = check_restrictions(sh, uid, login, &sender, &rcpts).await? else {
        // DISCARD: the submitter is told it was queued; nothing is.
        return Ok("NOQUEUE".into());
    };
    let full_name = if b.full_name.is_empty() {
        user.gecos.as_str()
    } else {
        b.full_name.as_str()
    };
    let content = rewrite(sub, &sender, full_name);
    let smtputf8 = utf8 || !sender.is_ascii() || rcpts.iter().any(|r| !r.is_ascii());
    let begin = sc::Begin {
        client: local_client(Some(uid)),
        sender: sender.clone(),
        ret: b.ret,
        envid: b.envid.clone(),
        smtputf8,
        body_8bit: b.body_8bit || content.iter().any(|&c| c >= 0x80),
        trace: b.trace,
        remote_headers: false,
        milter_ticket: 0,
        signable: true,
        requiretls: false,
    };
    let list: Vec<sc::Recipient> = rcpts
        .iter()
        .map(|r| sc::Recipient {
            address: r.clone(),
            orcpt: String::new(),
            notify: b.notify,
        })
        .collect();
    match crate::submit::to_cleanup_with(
        &sh.sb,
        sh.set.query,
        sh.set.transfer,
        begin,
        &list,
        &content,
        &effects,
        |id| {
            info!("{id}: uid={uid} from=<{sender}>");
        },
    )
    .await
    {
        Ok(id) => Ok(id),
        Err(crate::submit::Error::Refused(f)) => Err(refuse(
            if f.code >= 500 {
                EX_DATAERR
            } else {
                EX_TEMPFAIL
            },
            format!("{} {} {}", f.code, f.enhanced, f.text),
        )),
        Err(crate::submit::Error::Broken(e)) => {
            warn!("uid={uid}: cannot queue: {e}");
            Err(refuse(EX_TEMPFAIL, "queue file write error"))
        }
    }
}

/// The "client" of mail made on this host: a local submitter (`uid`), or
/// pickup itself.
pub(super) fn local_client(uid: Option<u32>) -> sc::Client {
    sc::Client {
        name: "localhost".into(),
        addr: String::new(),
        port: 0,
        helo: String::new(),
        proto: "local".into(),
        log_name: String::new(),
        tls: String::new(),
        local_uid: uid,
    }
}

/// The restriction tables as pickup reaches them: its own table cache.
struct PickupTables<'a>(&'a Shared);

impl crate::restrict::Lookups for PickupTables<'_> {
    async fn access(
        &self,
        map: &str,
        keys: Vec<String>,
    ) -> Result<Option<(usize, String)>, String> {
        let Some((_, t)) = self.0.set.access_maps.iter().find(|(n, _)| n == map) else {
            return Err(format!("{map}: not among the configured access tables"));
        };
        self.0.tables.access(t, &keys).await
    }

    async fn sender_owners(&self, sender: &str) -> Result<Option<Vec<String>>, String> {
        for k in crate::access::sender_login_keys(sender) {
            match self.0.tables.lookup_any(&self.0.set.sender_login, &k).await {
                Ok(Some(v)) => return Ok(Some(crate::access::sender_owners(&v))),
                Ok(None) => {}
                Err(e) => return Err(format!("smtpd_sender_login_maps lookup error: {e}")),
            }
        }
        Ok(None)
    }

    /// Local submission is not validated against the recipient tables
    /// (Postfix's pickup applies no restrictions at all): an unknown
    /// recipient bounces to the local user who sent it, never to a
    /// stranger.
    async fn listed(&self, _: &str, _: &str, _: bool) -> Result<bool, String> {
        Ok(true)
    }

    /// Not validated either (every address counts as listed); the
    /// domains still make destinations (reject_unauth_destination).
    async fn virtual_table(
        &self,
        which: crate::restrict::Virtual,
        address: &str,
    ) -> Result<(bool, bool), String> {
        let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
        let domains = match which {
            crate::restrict::Virtual::Alias => &self.0.set.alias_domains,
            crate::restrict::Virtual::Mailbox => &self.0.set.mailbox_domains,
        };
        Ok((true, domains.contains(&self.0.tables, domain).await?))
    }

    /// Local submission is not verified either (pickup has no channel to
    /// verify, so nothing submitted locally can start a probe or touch its
    /// results): every address counts as deliverable.
    async fn verify(&self, _: &str) -> Result<postern_ipc::verify::Reply, String> {
        Ok(postern_ipc::verify::Reply {
            status: postern_ipc::verify::Status::Deliverable,
            text: String::new(),
        })
    }

    /// Local submission asks no policy server (the restrictions skip
    /// check_policy_service without session facts, so this is never
    /// called); were it asked, the default action would apply.
    async fn policy(
        &self,
        _: &postern_config::policy::Resolved,
        _: Vec<(&'static str, String)>,
    ) -> Result<String, String> {
        Err("local submission asks no policy server".into())
    }

    /// pickup has no network: local submission skips the DNS checks (a
    /// name is taken to exist, a list to hold nothing).
    async fn dns(&self, q: crate::restrict::DnsQuery) -> crate::restrict::Dns {
        use crate::restrict::{Dns, DnsQuery};
        match q {
            DnsQuery::Mx(_) | DnsQuery::Addresses(_) | DnsQuery::Ns(_) => Dns::Found(Vec::new()),
            DnsQuery::A(_) | DnsQuery::Txt(_) => Dns::NotFound,
        }
    }
}

/// smtpd's sender, relay and recipient restrictions, with the local user
/// as an authenticated client on the loopback address (L854).
pub(super) async fn check_restrictions(
    sh: &Shared,
    uid: u32,
    login: &str,
    sender: &str,
    rcpts: &[String],
) -> Result<Option<sc::Effects>, Refusal> {
    let ip = std::net::IpAddr::from([127, 0, 0, 1]);
    let lk = PickupTables(sh);
    let mut effects = sc::Effects::default();
    for rcpt in rcpts {
        let facts = crate::restrict::Facts {
            ip,
            name: "localhost",
            namaddr: "localhost[127.0.0.1]",
            reverse_name: "localhost",
            name_status: crate::restrict::NameStatus::Ok,
            reverse_status: crate::restrict::NameStatus::Ok,
            helo: Some(&sh.set.myhostname),
            sender: Some(sender),
            rcpt: Some(rcpt),
            login: Some(login),
            tls: false,
            pipelined: false,
            rcpt_count: 0,
            ccert: None,
            session: None,
        };
        let mut run = Run::new(&lk, &sh.set.policy, &sh.set.access, facts);
        let mut memo = crate::restrict::Memo::default();
        let outcome = run.local_submission(&mut memo).await;
        for n in &run.notes {
            info!(
                "uid={uid}: {}: {}; from=<{sender}> to=<{rcpt}>",
                n.what, n.text
            );
        }
        if let Outcome::Reject(r) = outcome {
            let text = r.summary();
            info!("uid={uid}: reject: {text}; from=<{sender}> to=<{rcpt}>");
            return Err(refuse(
                if r.code >= 500 {
                    EX_NOPERM
                } else {
                    EX_TEMPFAIL
                },
                text,
            ));
        }
        if run.effects.discard.is_some() {
            // Postfix's DISCARD: the whole message goes, as in smtpd.
            return Ok(None);
        }
        crate::smtpd::merge(&mut effects, std::mem::take(&mut run.effects));
    }
    Ok(Some(effects))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_recipients_follow_rfc5322() {
        let h = b"To: \"Doe, J\" <j@x.example>, k@y.example, root\r\nCc: group: a@g.example, b@g.example;\r\nBcc: (c) hidden@z.example\r\nSubject: To: no@no.example\r\n\r\n";
        let mut r = header_recipients(h);
        r.sort();
        assert_eq!(
            r,
            vec![
                "a@g.example",
                "b@g.example",
                "hidden@z.example",
                "j@x.example",
                "k@y.example",
                "root"
            ]
        );
        let resent = b"To: old@x.example\r\nResent-To: new@x.example\r\n\r\n";
        assert_eq!(header_recipients(resent), vec!["new@x.example"]);
    }

    #[test]
    fn display_names_are_quoted_when_needed() {
        assert_eq!(phrase("Cron Daemon"), "Cron Daemon");
        assert_eq!(phrase("Doe, John"), "\"Doe, John\"");
        assert_eq!(phrase("a\"b"), "\"a\\\"b\"");
    }
}
