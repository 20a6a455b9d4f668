//! Entry points shared by the fuzz targets in `fuzz/` (cargo-fuzz, nightly)
//! and the corpus-replay tests that run on stable (`tests/fuzz_replay.rs`).
//! Each takes arbitrary bytes, must never panic, and checks the properties
//! that make its parser trustworthy (round trips, chunking independence).
use crate::address::{Mailbox, parse_path};
use crate::header;
use crate::queue::{self, FRAME, Record, Tail};
use crate::smtp::reply::{MAX_REPLY_LINES, ReplyParser};
use crate::smtp::{BareLf, Command, DataDecoder, LineNormalizer, Progress, parse_command};

/// An SMTP command line, and the paths of MAIL and RCPT under both address
/// grammars: a parsed mailbox prints as a path that parses to itself.
pub fn smtp_command(data: &[u8]) {
    let line = data.strip_suffix(b"\r\n").unwrap_or(data);
    match parse_command(line) {
        Ok(Command::Mail { path, params } | Command::Rcpt { path, params }) => {
            for p in &params {
                assert_eq!(p.key, p.key.to_ascii_uppercase(), "keys are upper-cased");
            }
            for utf8 in [false, true] {
                address_round_trip(&path, utf8);
            }
        }
        Ok(c) => {
            let _ = c.verb();
        }
        Err(reply) => assert!(reply.code >= 500 && reply.code < 600, "{reply:?}"),
    }
}

/// A mail address, under both grammars.
pub fn address(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    for utf8 in [false, true] {
        address_round_trip(s, utf8);
    }
}

fn address_round_trip(path: &str, utf8: bool) {
    if let Ok(m) = parse_path(path, utf8) {
        assert!(utf8 || !m.is_utf8(), "non-ASCII accepted without SMTPUTF8");
        let again: Mailbox = parse_path(&m.address(), utf8)
            .unwrap_or_else(|e| panic!("{path:?} parsed as {m:?}, which does not parse: {e}"));
        assert_eq!(again, m, "{path:?} does not round-trip");
    }
}

/// A server's replies, line by line, as the SMTP client reads them.
pub fn smtp_reply(data: &[u8]) {
    let mut p = ReplyParser::default();
    for line in data.split_inclusive(|&b| b == b'\n') {
        match p.line(line) {
            Ok(Some((code, lines))) => {
                assert!(code < 1000);
                assert!(!lines.is_empty() && lines.len() <= MAX_REPLY_LINES);
            }
            Ok(None) => {}
            Err(_) => p = ReplyParser::default(),
        }
    }
}

/// The state store's namespace files: whatever decodes re-encodes to a
/// file that decodes to the same records, with nothing corrupt.
pub fn state_file(data: &[u8]) {
    use crate::statefile::{Limits, decode, encode};
    let lim = Limits {
        version: 1,
        max_key: 512,
        max_value: 1024,
    };
    let d = decode(data, lim);
    let again = decode(&encode(1, &d.records), lim);
    assert_eq!(again.records, d.records);
    assert_eq!((again.corrupt, again.stopped.is_none()), (0, true));
}

/// Replies of external table servers (tcp_table and socketmap): the first
/// byte picks the protocol; the rest arrives in two pieces split at the
/// second byte's position. A reply parsed from the pieces equals the one
/// parsed from the whole, and consumes no more than it was given.
pub fn table_reply(data: &[u8]) {
    use crate::tablemap::{Progress, socketmap_reply, tcp_reply};
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let parse = if sel & 1 == 0 {
        tcp_reply
    } else {
        socketmap_reply
    };
    let whole = parse(rest);
    if let Ok(Progress::Done(_, used)) = &whole {
        assert!(*used <= rest.len());
    }
    let cut = usize::from(rest.first().copied().unwrap_or(0)).min(rest.len());
    match parse(&rest[..cut]) {
        Ok(Progress::More) => {}
        // Done early: the same answer as from the whole input.
        Ok(done @ Progress::Done(..)) => assert_eq!(Ok(done), whole),
        // An error in a prefix is an error in the whole (limits, syntax).
        Err(_) => assert!(whole.is_err() || cut == rest.len()),
    }
    let _ = crate::tablemap::hex_unquote(rest);
    let quoted = crate::tablemap::hex_quote(rest);
    assert_eq!(
        crate::tablemap::hex_unquote(quoted.as_bytes()).as_deref(),
        Some(rest)
    );
}

/// The DATA decoder and the BDAT line normalizer: the first byte picks the
/// bare-LF mode and a chunk size; the stream decoded in chunks must give
/// exactly what it gives in one piece, and the content never holds a bare LF
/// or an end-of-data line.
pub fn data_stream(data: &[u8]) {
    let Some((&ctl, input)) = data.split_first() else {
        return;
    };
    let mode = if ctl & 1 == 0 {
        BareLf::Normalize
    } else {
        BareLf::Reject
    };
    let chunk = usize::from(ctl >> 1).max(1);

    let whole = decode(input, mode, input.len().max(1));
    let pieces = decode(input, mode, chunk);
    assert_eq!(whole, pieces, "chunking changed the DATA decoding");
    let (out, progress, _) = &whole;
    if *progress != Progress::BareLf {
        assert!(!has_bare_lf(out), "a bare LF in the decoded content");
    }
    match progress {
        // The only end of data is CRLF "." CRLF, or "." CRLF at the very
        // start: never a bare CR or LF variant (SMTP smuggling).
        Progress::End => {
            let used = whole.2;
            let seen = &input[..used];
            assert!(
                seen == b".\r\n" || seen.ends_with(b"\r\n.\r\n"),
                "data ended at {seen:?}"
            );
        }
        Progress::BareLf => assert_eq!(mode, BareLf::Reject),
        Progress::More => {}
    }

    let mut a = Vec::new();
    let mut b = Vec::new();
    let ra = LineNormalizer::default().feed(input, mode, &mut a);
    let mut n = LineNormalizer::default();
    let rb = input
        .chunks(chunk)
        .try_for_each(|c| n.feed(c, mode, &mut b));
    assert_eq!(ra.is_ok(), rb.is_ok());
    if ra.is_ok() {
        assert_eq!(a, b, "chunking changed the BDAT normalization");
        assert!(!has_bare_lf(&a));
    }
}

fn decode(input: &[u8], mode: BareLf, chunk: usize) -> (Vec<u8>, Progress, usize) {
    let mut d = DataDecoder::new(mode);
    let mut out = Vec::new();
    let mut used = 0;
    for c in input.chunks(chunk) {
        let (n, p) = d.feed(c, &mut out);
        used += n;
        assert!(n <= c.len());
        if p != Progress::More {
            return (out, p, used);
        }
        assert_eq!(n, c.len(), "More must consume everything");
    }
    (out, Progress::More, used)
}

fn has_bare_lf(b: &[u8]) -> bool {
    b.iter()
        .enumerate()
        .any(|(i, &c)| c == b'\n' && (i == 0 || b[i - 1] != b'\r'))
}

/// Message headers: the header/body split agrees with itself as bytes
/// arrive, and every field comes from the header section.
pub fn message_header(data: &[u8]) {
    let full = header::split(data, true);
    if let header::Split::Done { headers, body } = full {
        assert!(headers <= body && body <= data.len());
        for f in header::fields(&data[..headers]) {
            let _ = f.value();
        }
        // Before the end, a prefix either needs more or ends in the same place.
        if let Some(cut) = body.checked_add(1).filter(|&c| c < data.len()) {
            match header::split(&data[..cut], false) {
                header::Split::Incomplete => {}
                header::Split::Done { headers: h, .. } => assert_eq!(h, headers),
            }
        }
    }
}

/// Queue files: arbitrary bytes through the record decoder, and the input
/// cut into length-prefixed payloads framed with a valid checksum, so the
/// fuzzer reaches the postcard decoder and the summary. Every record that
/// decodes re-encodes to the very bytes it came from.
pub fn queue_records(data: &[u8]) {
    let (recs, tail) = queue::decode_all(data);
    check_records(data, &recs, &tail);

    let mut framed = Vec::new();
    let mut rest = data;
    while let Some((&n, tail)) = rest.split_first() {
        let n = usize::from(n).min(tail.len());
        let payload = &tail[..n];
        framed.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        framed.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        framed.extend_from_slice(payload);
        rest = &tail[n..];
    }
    let (recs, tail) = queue::decode_all(&framed);
    check_records(&framed, &recs, &tail);
}

fn check_records(buf: &[u8], recs: &[(u64, Record)], tail: &Tail) {
    let mut end = 0u64;
    for (off, r) in recs {
        let enc = queue::encode(r);
        let at = *off as usize;
        assert!(enc.len() >= FRAME);
        // postcard is canonical for these types except for varint
        // overlong forms; the re-encoding must decode to the same record.
        let (again, t) = queue::decode_all(&enc);
        assert_eq!(t, Tail::Clean);
        assert_eq!(again.len(), 1);
        assert_eq!(&again[0].1, r);
        assert!(at < buf.len());
        end = *off
            + (FRAME as u64)
            + u64::from(u32::from_le_bytes(
                buf[at..at + 4].try_into().expect("4 bytes"),
            ));
    }
    match tail {
        Tail::Clean => assert_eq!(end, buf.len() as u64),
        Tail::Torn { offset } | Tail::Corrupt { offset, .. } => assert_eq!(*offset, end),
    }
    let s = queue::summarize(recs, end);
    let _ = s.all_done();
    let _ = queue::content(recs);
}

/// The SMTP session core as a state machine: each input byte picks a step
/// (a command from a dictionary, raw bytes, content, a transport event, a
/// peer that fails, times out or answers late, a verdict). The in-memory
/// shell (`smtp::server::sim`) checks the invariants on every action: no
/// panic, every reply well-formed, nothing replied or committed after the
/// session closed (a TLS teardown is a close), and no commit without MAIL,
/// an accepted RCPT and complete content in one transaction.
pub fn smtp_session(data: &[u8]) {
    use crate::smtp::Reply;
    use crate::smtp::server::sim::{Sim, config};
    use crate::smtp::server::{Answer, Event, Stage, TlsPolicy, Verdict};

    const WORDS: [&[u8]; 24] = [
        b"EHLO c.example\r\n",
        b"HELO c.example\r\n",
        b"MAIL FROM:<a@b.example>\r\n",
        b"MAIL FROM:<> SMTPUTF8 BODY=8BITMIME\r\n",
        b"RCPT TO:<c@d.example>\r\n",
        b"RCPT TO:<postmaster> NOTIFY=NEVER\r\n",
        b"DATA\r\n",
        b"BDAT 5\r\n",
        b"BDAT 3 LAST\r\n",
        b"BDAT 0 LAST\r\n",
        b"RSET\r\n",
        b"NOOP\r\n",
        b"QUIT\r\n",
        b"VRFY <c@d.example>\r\n",
        b"STARTTLS\r\n",
        b"AUTH PLAIN AHUAcHc=\r\n",
        b"AUTH PLAIN AHUAbm8=\r\n",
        b"AUTH LOGIN\r\n",
        b"dQ==\r\n",
        b"*\r\n",
        b"body line\r\n",
        b"\r\n.\r\n",
        b".\r\n",
        b"bare\nlf\n",
    ];
    let Some((&setup, ops)) = data.split_first() else {
        return;
    };
    let mut cfg = config();
    cfg.wrapper = setup & 1 != 0;
    cfg.tls = match (setup >> 1) & 3 {
        0 => TlsPolicy::None,
        1 => TlsPolicy::Encrypt,
        _ => TlsPolicy::May,
    };
    cfg.message_size_limit = if setup & 8 != 0 { 16 } else { 4096 };
    cfg.line_length_limit = if setup & 16 != 0 { 24 } else { 2048 };
    cfg.hard_error_limit = 1 + u32::from(setup >> 5) * 4;
    cfg.tls_auth_only = setup & 32 != 0;
    cfg.auth_without_tls = setup & 64 == 0;
    let mut sim = Sim::new(cfg);
    let mut i = 0;
    while i < ops.len() {
        let op = ops[i];
        i += 1;
        let arg = ops.get(i).copied().unwrap_or(0);
        match op % 16 {
            0..=5 => {
                i += 1;
                sim.send(WORDS[(usize::from(op / 16) + usize::from(arg)) % WORDS.len()]);
            }
            6 => {
                let start = (i + 1).min(ops.len());
                let end = (start + usize::from(arg)).min(ops.len());
                sim.send(&ops[start..end]);
                i = end;
            }
            7 => sim.event(Event::Closed),
            8 => sim.event(Event::Timeout),
            9 => sim.event(Event::SinkLost),
            10 => sim.peers.next.push_back(None),
            11 => sim
                .peers
                .next
                .push_back(Some(Answer::Failed(Reply::new(451, "4.3.0", "failed")))),
            12 => {
                i += 1;
                let stage = Stage::ALL[usize::from(arg) % Stage::ALL.len()];
                let v = match arg / 8 % 3 {
                    0 => Verdict::Accept,
                    1 => Verdict::reject(Reply::new(554, "5.7.1", "rejected")),
                    _ => Verdict::Discard("discarded".into()),
                };
                sim.peers.verdicts.retain(|(s, _)| *s != stage);
                sim.peers.verdicts.push((stage, v));
            }
            13 => sim.peers.tls_fails = !sim.peers.tls_fails,
            14 => {
                // An answer nobody waits for (late, or twice).
                i += 1;
                let late = match arg % 5 {
                    0 => Answer::Committed,
                    1 => Answer::Sent,
                    2 => Answer::Begun {
                        queue_id: "LATE".into(),
                    },
                    3 => Answer::PeerGone,
                    _ => Answer::Verdict(Verdict::Accept),
                };
                let waiting = sim.server.wants() == crate::smtp::server::Want::Answer;
                if !waiting {
                    let before = sim.server.in_transaction();
                    sim.server.answer(late);
                    assert_eq!(
                        before,
                        sim.server.in_transaction(),
                        "a late answer changed the state"
                    );
                    assert!(
                        sim.server.poll().is_none(),
                        "a late answer produced actions"
                    );
                }
            }
            _ => sim.event(Event::LineTooLong),
        }
        if sim.closed {
            // After the close nothing is read: input is ignored.
            let n = sim.replies.len();
            sim.send(b"MAIL FROM:<x@y>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\r\n.\r\n");
            assert_eq!(n, sim.replies.len(), "a reply after the session closed");
        }
    }
    for m in &sim.committed {
        assert!(!m.rcpts.is_empty());
    }
}

/// The MIME walker over a body: bounded nesting, every line accounted
/// for, and the same items whichever way the lines are cut into calls.
pub fn mime_walk(data: &[u8]) {
    let (ct, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let mut w = crate::mime::Walker::new(Some(ct), 8);
    let mut items = Vec::new();
    let mut lines = 0;
    for line in body.split(|b| *b == b'\n') {
        w.line(line, &mut items);
        lines += 1;
    }
    w.finish(&mut items);
    let bodies = items
        .iter()
        .filter(|i| matches!(i, crate::mime::Item::Body(_)))
        .count();
    let ends = items
        .iter()
        .filter(|i| matches!(i, crate::mime::Item::EndOfHeaders))
        .count();
    // Each line is a body line, ends a header section, or is part of a
    // header (one header item may hold several lines).
    assert!(bodies + ends <= lines);
    for i in &items {
        if let crate::mime::Item::Header(_, h) = i {
            assert!(h.len() <= crate::mime::MAX_HEADER + lines);
        }
    }
}

/// A client certificate (DER) as smtpd's checks read it: the public key is
/// DER itself, the name printable and bounded.
pub fn ccert(data: &[u8]) {
    if let Some(p) = crate::ccert::parse(data) {
        assert!(!p.spki.is_empty());
        assert!(p.cn.len() <= crate::ccert::MAX_CN);
        assert!(p.cn.bytes().all(|b| (0x20..0x7f).contains(&b)));
    }
    // A server certificate's key, for the TLS log line.
    if let Some(crate::ccert::KeyKind::Rsa(bits)) = crate::ccert::key_kind(data) {
        assert!(bits <= data.len() * 8);
    }
    // A certificate's issuer and key, for public-key trust anchors.
    if let Some((issuer, spki)) = crate::ccert::issuer_and_spki(data) {
        assert!(issuer.len() < data.len() && spki.len() < data.len());
    }
    if let Some(v) = crate::ccert::der_value(data) {
        assert!(v.len() < data.len());
    }
    // A raw public key's, likewise.
    if let Some(crate::ccert::KeyKind::Rsa(bits)) = crate::ccert::spki_key_kind(data) {
        assert!(bits <= data.len() * 8);
    }
}

/// A header value's address list: the spans are in order, inside the
/// value and apart; putting each span's own bytes back gives the value
/// again; and replacing every address leaves as many to find.
pub fn header_addresses(data: &[u8]) {
    use crate::addrlist::{addresses, replace};
    let spans = addresses(data);
    let mut at = 0;
    for s in &spans {
        assert!(
            s.start >= at && s.start < s.end && s.end <= data.len(),
            "{s:?}"
        );
        at = s.end;
    }
    let same: Vec<_> = spans
        .iter()
        .map(|s| {
            let text = String::from_utf8(data[s.start..s.end].to_vec()).expect("utf-8 span");
            (s.clone(), text)
        })
        .collect();
    assert_eq!(replace(data, &same), data);
    let edits: Vec<_> = spans
        .iter()
        .map(|s| (s.clone(), "someone@example.test".to_string()))
        .collect();
    let again = addresses(&replace(data, &edits));
    assert_eq!(again.len(), spans.len());
}

/// An HTTP request head: never more than the cap is waited for, and bytes
/// after a complete head change nothing.
pub fn http_request(data: &[u8]) {
    use crate::http::{MAX_HEAD, parse};
    match parse(data) {
        Ok(None) => assert!(data.len() < MAX_HEAD, "waits past the cap"),
        Ok(Some(r)) => {
            assert!(!r.path.contains(['?', '#']));
            let mut more = data.to_vec();
            more.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
            assert_eq!(parse(&more), Ok(Some(r)));
        }
        Err(_) => {}
    }
}

/// A policy server's reply: never more than the caps is read, the answer
/// does not depend on how the bytes are split, and an action, when there
/// is one, is printable text.
pub fn policy_reply(data: &[u8]) {
    use crate::policy::{MAX_LINE, MAX_REPLY, ReplyParser};
    let (used, whole) = ReplyParser::new().feed(data);
    assert!(used <= data.len() && used <= MAX_REPLY + 1);
    if whole.is_none() {
        assert_eq!(used, data.len());
        assert!(data.len() <= MAX_REPLY);
    }
    if let Some(Ok(a)) = &whole {
        assert!(!a.is_empty() && a.len() <= MAX_LINE && !a.chars().any(char::is_control));
    }
    // The same bytes in two pieces, split at a point the input chooses.
    let cut = data
        .first()
        .map_or(0, |&b| usize::from(b) % (data.len() + 1));
    let mut p = ReplyParser::new();
    let (n1, r1) = p.feed(&data[..cut]);
    let split = match r1 {
        Some(r) => (n1, Some(r)),
        None => {
            let (n2, r2) = p.feed(&data[cut..]);
            (n1 + n2, r2)
        }
    };
    assert_eq!(split, (used, whole));
}

/// A Milter's replies, as the Milter client reads them: packet after
/// packet from one stream until one is incomplete or wrong. Whatever
/// parses must re-encode to a packet that parses to the same reply, and a
/// reply never claims more bytes than the stream holds.
pub fn milter_reply(data: &[u8]) {
    use crate::milter::{Collect, MAX_PACKET, Negotiated, Reply, Step, action, read_reply, step};
    // The replies also answer one step, which the first byte chooses,
    // for a filter that negotiated every action: edits only at the end
    // of the message, a body replacement never above its limit.
    let steps = [
        Step::Connect,
        Step::Helo,
        Step::Mail,
        Step::Rcpt,
        Step::Data,
        Step::Header,
        Step::EndOfHeaders,
        Step::Body,
        Step::EndOfMessage,
        Step::Unknown,
    ];
    let which = steps[usize::from(data.first().copied().unwrap_or(0)) % steps.len()];
    let n = Negotiated::from_reply(
        action::ALL,
        step::ALL,
        Reply::OptNeg {
            version: 6,
            actions: action::ALL,
            protocol: step::SKIP,
            macros: vec![],
        },
    )
    .expect("a valid negotiation");
    let mut collect = Collect::new(which, &n, 4096);
    let mut decided = false;
    let mut at = 0;
    while at < data.len() {
        match read_reply(&data[at..]) {
            Ok(Some((reply, used))) => {
                assert!(used > 4 && used <= 4 + MAX_PACKET && at + used <= data.len());
                let again = reply.encode();
                let (back, n) = read_reply(&again)
                    .expect("a parsed reply re-encodes")
                    .expect("whole");
                assert_eq!(n, again.len());
                assert_eq!(back, reply);
                if !decided {
                    match collect.reply(reply) {
                        Ok(Some(_)) | Err(_) => decided = true,
                        Ok(None) => {}
                    }
                }
                assert!(which == Step::EndOfMessage || collect.edits.is_empty());
                let body: usize = collect
                    .edits
                    .iter()
                    .map(|e| match e {
                        crate::milter::Edit::ReplaceBody(b) => b.len(),
                        _ => 0,
                    })
                    .sum();
                assert!(body <= 4096);
                at += used;
            }
            Ok(None) | Err(_) => break,
        }
    }
}

/// A PROXY protocol header, as smtpd reads it before the session: never
/// more bytes than the header, never a decision on a prefix of a header
/// that parses whole, and a version 2 header re-encodes to itself.
pub fn proxy_header(data: &[u8]) {
    use crate::proxy::{Header, MAX_HEADER, encode_v2, parse};
    let Ok(Some((h, n))) = parse(data) else {
        // Undecided input is never longer than a header could be.
        if let Ok(None) = parse(data) {
            assert!(data.len() < MAX_HEADER);
        }
        return;
    };
    assert!(n > 0 && n <= data.len() && n <= MAX_HEADER);
    for cut in 0..n {
        assert_eq!(parse(&data[..cut]), Ok(None), "decided on a prefix");
    }
    let same_family = match h {
        Header::Proxied { client, server } => client.is_ipv4() == server.is_ipv4(),
        Header::Local => true,
    };
    if same_family {
        let e = encode_v2(&h);
        assert_eq!(parse(&e), Ok(Some((h, e.len()))));
    }
}

/// A message as the authentication checks read it (mail-auth's parse of
/// its header fields, DKIM signatures and ARC sets), and the key records
/// the checks would ask for: each a lower-case name with its final dot.
pub fn auth_message(data: &[u8]) {
    let Some(m) = mail_auth::AuthenticatedMessage::parse(data) else {
        return;
    };
    let names = crate::auth::key_names(&m, 10, true, true);
    assert!(names.len() <= 30, "{} names", names.len());
    for n in names {
        assert!(n.ends_with("."), "{n}");
        assert!(n.contains("._domainkey."), "{n}");
    }
}

/// A TXT record as the checks parse it (an SPF record, a DKIM key, a DMARC
/// policy), and the questions an SPF record leads to: at most one per
/// directive, plus the redirect.
pub fn auth_record(data: &[u8]) {
    use mail_auth::common::parse::TxtRecordParser;
    let _ = mail_auth::common::verify::DomainKey::parse(data);
    let _ = mail_auth::dmarc::Dmarc::parse(data);
    if let Ok(spf) = mail_auth::spf::Spf::parse(data) {
        let ip = std::net::IpAddr::from([192, 0, 2, 7]);
        for (sender, domain) in [("u@example.org", "example.org"), ("", "helo.example")] {
            let vars = crate::auth::spf_variables(ip, sender, domain, "helo.example");
            let q = crate::auth::spf_questions(&spf, &vars, domain);
            assert!(q.len() <= spf.directives.len() + 1);
        }
    }
}

/// postscreen's engine after the greeting, fed the input in the pieces
/// the first byte chooses: held bytes stay within the line limit, nothing
/// comes out after a close, and each test is decided at most once.
pub fn screen_session(data: &[u8]) {
    use crate::screen::{Action, Config, Engine, Outcome, Output, TESTS, TRY_AGAIN};
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let action = |b: u8| match b % 3 {
        0 => Action::Ignore,
        1 => Action::Enforce,
        _ => Action::Drop,
    };
    let cfg = Config {
        hostname: "mx.example".into(),
        pipelining: action(first),
        non_smtp: action(first >> 2),
        bare_newline: action(first >> 4),
        line_limit: 512,
        command_count_limit: 20,
        helo_required: first & 0x40 != 0,
        disable_vrfy: first & 0x80 != 0,
        forbidden: vec!["CONNECT".into(), "GET".into(), "POST".into()],
        size_limit: 10240000,
        soft_bounce: first & 1 != 0,
    };
    let mut e = Engine::new("[192.0.2.1]:4000".into(), TRY_AGAIN.into());
    let piece = usize::from(first % 17) + 1;
    let mut decided = [Outcome::Pending; 3];
    for chunk in rest.chunks(piece) {
        let was_closed = e.is_closed();
        let out = e.feed(&cfg, chunk);
        if was_closed {
            assert!(out.is_empty(), "output after close");
        }
        assert!(e.held() <= cfg.line_limit);
        let closes = out.iter().filter(|o| **o == Output::Close).count();
        assert!(closes <= 1);
        if closes == 1 {
            assert_eq!(out.last(), Some(&Output::Close));
        }
        for o in &out {
            if let Output::Send(s) = o {
                assert!(s.ends_with("\r\n") && s.len() >= 5, "{s:?}");
                assert!(s.is_ascii());
            }
            if let Output::Log(l) = o {
                assert!(!l.contains(['\r', '\n']), "{l:?}");
            }
        }
        for (i, t) in TESTS.iter().enumerate() {
            let now = e.outcome(*t);
            if decided[i] != Outcome::Pending {
                assert_eq!(now, decided[i], "a decided test changed");
            }
            decided[i] = now;
        }
    }
}

/// MTA-STS and TLS-RPT input from DNS and HTTPS: the TXT records and the
/// policy file never panic the parsers; a policy that parses renders to
/// text that parses to the same policy, and its mx patterns match
/// themselves (a wildcard: one label more).
pub fn mta_sts(data: &[u8]) {
    use crate::mtasts::{MAX_AGE, policy, policy_response, sts_record, tlsrpt_record};
    let text = String::from_utf8_lossy(data);
    // The same bytes as an HTTPS server's whole response.
    if let Ok(p) = policy_response(data) {
        assert!(p.max_age <= MAX_AGE);
    }
    if let Ok(r) = sts_record(&text) {
        assert!(!r.id.is_empty() && r.id.len() <= 32);
    }
    if let Ok(list) = tlsrpt_record(&text) {
        assert!(!list.is_empty());
    }
    if let Ok(p) = policy(data) {
        assert!(p.max_age <= MAX_AGE);
        assert_eq!(policy(p.render().as_bytes()), Ok(p.clone()));
        for m in &p.mx {
            let host = match m.strip_prefix("*.") {
                Some(parent) => format!("x.{parent}"),
                None => m.clone(),
            };
            assert!(p.matches(&host), "{m} does not match {host}");
        }
    }
}
