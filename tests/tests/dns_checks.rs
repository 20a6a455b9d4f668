//! The restrictions that ask DNS, against a real DNS server on loopback
//! (hickory's, serving zones from zone-file text): client names looked up
//! and forward-confirmed at connect, DNS deny and allow lists with reply
//! filters and TXT reasons, RHSBL lists, reverse-name access maps, and the
//! reject_unknown_* checks, through NXDOMAIN, a refused query (a temporary
//! failure) and a server that never answers.
//!
//! Clients here connect from 127.0.0.0/8, whose reverse names every
//! resolver answers itself (RFC 6761: "localhost", never asked of a
//! server). So 127.0.0.1 is confirmed as localhost, any other loopback
//! client has an unconfirmed name, and a missing or failing PTR record
//! needs a client outside loopback (a test network namespace).
use std::time::Duration;

use postern_tests::{Instance, Smtp, dns, wait_for};

fn logged(inst: &Instance, needle: &str) {
    wait_for(needle, Duration::from_secs(10), || {
        inst.log().contains(needle).then_some(())
    });
}

/// Builds a hash table in the instance's configuration directory.
fn table(inst: &Instance, name: &str, text: &str) -> String {
    let path = inst.config_dir().join(name);
    std::fs::write(&path, text).unwrap();
    let spec = format!("hash:{}", path.display());
    let out = inst.postern(&["map", "build", &spec]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    spec
}

const TEST_ZONE: &str = "@ 3600 IN SOA ns.test. admin.test. 1 3600 600 86400 60\n\
    @ 3600 IN NS ns.test.\n\
    ns 3600 IN A 127.0.0.1\n\
    good 60 IN A 127.0.0.77\n\
    liar 60 IN A 127.0.0.1\n\
    2.0.0.127.zen 60 IN A 127.0.0.2\n\
    2.0.0.127.zen 60 IN TXT \"Listed by zen.test, see https://zen.test/127.0.0.2\"\n\
    3.0.0.127.zen 60 IN A 127.0.0.10\n\
    4.0.0.127.wl 60 IN A 127.0.10.1\n\
    spam.example.dbl 60 IN A 127.0.1.2\n\
    localhost.dbl 60 IN A 127.0.1.2\n\
    liar.test.dbl 60 IN A 127.0.1.2\n\
    localhost.wl 60 IN A 127.0.10.1\n\
    has-mx 60 IN MX 10 mx.has-mx.test.\n\
    mx.has-mx 60 IN A 127.0.0.1\n\
    nullmx 60 IN MX 0 .\n\
    a-only 60 IN A 127.0.0.1\n\
    helo-ok 60 IN A 127.0.0.1\n\
    badmx 60 IN MX 10 mx.spammy.test.\n\
    mx.spammy 60 IN A 127.0.0.9\n\
    byaddr 60 IN MX 10 mx.byaddr.test.\n\
    mx.byaddr 60 IN A 127.0.0.99\n\
    allowmx 60 IN MX 10 mx.allow.test.\n\
    mx.allow 60 IN A 127.0.0.8\n\
    at-listed 60 IN A 127.0.0.9\n";

/// The reverse zone of the loopback clients: a confirmed name, names that
/// do not resolve back, and addresses without a PTR (NXDOMAIN). Addresses
/// under 127.0.1.0/24 are in a zone the server does not serve: it refuses
/// them, which a resolver takes as a temporary failure (SERVFAIL).
const REVERSE_ZONE: &str = "@ 3600 IN SOA ns.test. admin.test. 1 3600 600 86400 60\n\
    @ 3600 IN NS ns.test.\n\
    77 60 IN PTR good.test.\n\
    78 60 IN PTR liar.test.\n\
    81 60 IN PTR liar.test.\n";

/// One attempt with swaks: EHLO, MAIL, RCPT from the loopback address
/// `src`; the RCPT reply.
fn attempt(inst: &Instance, src: &str, helo: &str, sender: &str, rcpt: &str) -> String {
    let s = postern_tests::swaks::rcpt(src, &inst.ip, inst.smtp_port, helo, sender, rcpt);
    let m = s.reply_to("MAIL").unwrap_or_default();
    assert!(m.starts_with("250"), "MAIL: {m}\n{}", s.transcript);
    s.reply_to("RCPT")
        .unwrap_or_else(|| panic!("no RCPT reply:\n{}", s.transcript))
}

#[test]
fn dns_lists_client_names_and_domain_checks_against_a_real_dns_server() {
    let mut inst = Instance::new("");
    let server = dns::start_zones(
        &inst.ip,
        &[
            ("test.", TEST_ZONE),
            ("0.0.127.in-addr.arpa.", REVERSE_ZONE),
        ],
    );
    // The server checks: name servers by name (found at the parent
    // domain) and by address, and a domain's own addresses.
    let nsdeny = table(
        &inst,
        "nsdeny",
        "ns.test REJECT Sender name server is listed\n",
    );
    let nsaddr = table(
        &inst,
        "nsaddr",
        "127.0.0.1 REJECT Sender name server address is listed\n",
    );
    let adeny = table(
        &inst,
        "adeny",
        "127.0.0.9 REJECT Sender domain is at a listed address\n",
    );
    // Each recipient picks the restriction under test (a restriction list
    // as an access table's answer, or a restriction class where the list
    // names a table, which Postfix does not allow inside an access map).
    let dispatch = table(
        &inst,
        "dispatch",
        "ns@relay.example ns_check\n\
         nsaddr@relay.example nsaddr_check\n\
         a@relay.example a_check\n\
         unknown@relay.example reject_unknown_client_hostname, permit\n\
         reverse@relay.example reject_unknown_reverse_client_hostname, permit\n\
         rbl@relay.example reject_rbl_client zen.test=127.0.0.[2..9], permit\n\
         rblmap@relay.example reject_rbl_client zen.test=127.0.0.2, permit\n\
         rbltemp@relay.example reject_rbl_client zen.unserved, permit\n\
         dnswl@relay.example permit_dnswl_client wl.test, reject\n\
         dnswltemp@relay.example permit_dnswl_client wl.unserved, reject\n\
         rhsbl@relay.example reject_rhsbl_sender dbl.test, permit\n\
         helo@relay.example reject_unknown_helo_hostname, permit\n\
         sender@relay.example reject_unknown_sender_domain, permit\n\
         rhsblclient@relay.example reject_rhsbl_client dbl.test, permit\n\
         rhsblrev@relay.example reject_rhsbl_reverse_client dbl.test, permit\n\
         rhsblhelo@relay.example reject_rhsbl_helo dbl.test, permit\n\
         spam.example reject_rhsbl_recipient dbl.test, permit\n\
         rhswl@relay.example permit_rhswl_client wl.test, reject\n",
    );
    let rev = table(&inst, "rev", "127.0.0.81 REJECT Forged name\n");
    // rbl_reply_maps: by the list as written, then by its zone.
    let replies = table(
        &inst,
        "rblreplies",
        "zen.test=127.0.0.2 $rbl_code 5.7.9 Listed in $rbl_domain (exact): $rbl_class [$rbl_what]\n\
         zen.test $rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using $rbl_domain (zone template)${rbl_reason?; $rbl_reason}\n",
    );
    let mx = table(
        &inst,
        "mxdeny",
        "mx.spammy.test REJECT Sender MX is listed\n\
         127.0.0.99 REJECT Sender MX address is listed\n\
         mx.allow.test OK\n",
    );
    inst.add_main_cf(&format!(
        "smtpd_error_sleep_time = 0\n\
         smtpd_peername_lookup = yes\n\
         dns_nameservers = {}\n\
         mynetworks = 10.0.0.0/8\n\
         relay_domains = relay.example\n\
         unknown_client_reject_code = 550\n\
         rbl_reply_maps = {replies}\n\
         smtpd_restriction_classes = ns_check, nsaddr_check, a_check\n\
         ns_check = check_sender_ns_access {nsdeny}, permit\n\
         nsaddr_check = check_sender_ns_access {nsaddr}, permit\n\
         a_check = check_sender_a_access {adeny}, permit\n\
         smtpd_client_restrictions = check_reverse_client_hostname_access {rev}\n\
         smtpd_sender_restrictions = check_sender_mx_access {mx}\n\
         smtpd_relay_restrictions =\n\
         smtpd_recipient_restrictions = check_recipient_access {dispatch}, reject_unknown_recipient_domain, permit\n",
        server.addr
    ));
    inst.start();
    let ok = |src: &str, helo: &str, sender: &str, rcpt: &str| {
        let r = attempt(&inst, src, helo, sender, rcpt);
        assert!(
            r.starts_with("250 2.1.5"),
            "{src} {helo} {sender} {rcpt}: {r}"
        );
    };
    let refused = |src: &str, helo: &str, sender: &str, rcpt: &str, want: &str| {
        let r = attempt(&inst, src, helo, sender, rcpt);
        assert_eq!(r, want, "{src} {helo} {sender} {rcpt}");
    };
    let h = "client.example";
    let s = "someone@has-mx.test";

    // Client names: forward-confirmed (from the DNS server, and
    // 127.0.0.1, which is localhost without asking), unconfirmed, no PTR
    // (NXDOMAIN), and a PTR lookup that fails (SERVFAIL): a permanent
    // failure answers unknown_client_reject_code, a temporary one 450.
    ok("127.0.0.1", h, s, "unknown@relay.example");
    logged(&inst, "connect from localhost[127.0.0.1]");
    ok("127.0.0.77", h, s, "unknown@relay.example");
    logged(&inst, "connect from good.test[127.0.0.77]");
    refused(
        "127.0.0.78",
        h,
        s,
        "unknown@relay.example",
        "550 5.7.25 Client host rejected: cannot find your hostname, [127.0.0.78]",
    );
    logged(
        &inst,
        "warning: hostname liar.test does not resolve to address 127.0.0.78",
    );
    logged(
        &inst,
        "NOQUEUE: reject: RCPT from unknown[127.0.0.78]: 550 5.7.25 Client host rejected: cannot find your hostname, [127.0.0.78]; from=<someone@has-mx.test> to=<unknown@relay.example> proto=ESMTP helo=<client.example>",
    );
    refused(
        "127.0.0.79",
        h,
        s,
        "unknown@relay.example",
        "550 5.7.25 Client host rejected: cannot find your hostname, [127.0.0.79]",
    );
    refused(
        "127.0.1.5",
        h,
        s,
        "unknown@relay.example",
        "450 4.7.25 Client host rejected: cannot find your hostname, [127.0.1.5]",
    );
    // The reverse name exists, confirmed or not; without one, or when it
    // cannot be looked up, reject_unknown_reverse_client_hostname refuses.
    ok("127.0.0.78", h, s, "reverse@relay.example");
    ok("127.0.0.77", h, s, "reverse@relay.example");
    refused(
        "127.0.0.79",
        h,
        s,
        "reverse@relay.example",
        "550 5.7.25 Client host rejected: cannot find your reverse hostname, [127.0.0.79]",
    );
    refused(
        "127.0.1.5",
        h,
        s,
        "reverse@relay.example",
        "450 4.7.25 Client host rejected: cannot find your reverse hostname, [127.0.1.5]",
    );
    // check_reverse_client_hostname_access: the unconfirmed name, then
    // the address.
    refused(
        "127.0.0.81",
        h,
        s,
        "unknown@relay.example",
        "554 5.7.1 <liar.test[127.0.0.81]>: Unverified Client host rejected: Forged name",
    );

    // reject_rbl_client: listed with a TXT reason; listed outside the
    // filter; not listed; a list that cannot be asked (not listed, with a
    // warning).
    refused(
        "127.0.0.2",
        h,
        s,
        "rbl@relay.example",
        "554 5.7.1 Service unavailable; Client host [127.0.0.2] blocked using zen.test (zone template); Listed by zen.test, see https://zen.test/127.0.0.2",
    );
    logged(
        &inst,
        "NOQUEUE: reject: RCPT from unknown[127.0.0.2]: 554 5.7.1 Service unavailable; Client host [127.0.0.2] blocked using zen.test (zone template); Listed by zen.test, see https://zen.test/127.0.0.2; from=<someone@has-mx.test> to=<rbl@relay.example> proto=ESMTP helo=<client.example>",
    );
    refused(
        "127.0.0.2",
        h,
        s,
        "rblmap@relay.example",
        "554 5.7.9 Listed in zen.test (exact): Client host [127.0.0.2]",
    );
    ok("127.0.0.3", h, s, "rbl@relay.example");
    ok("127.0.0.1", h, s, "rbl@relay.example");
    ok("127.0.0.1", h, s, "rbltemp@relay.example");
    logged(&inst, "1.0.0.127.zen.unserved: RBL lookup error");

    // permit_dnswl_client: listed, not listed, and a temporary failure,
    // which turns the reject after it into 450.
    ok("127.0.0.4", h, s, "dnswl@relay.example");
    refused(
        "127.0.0.1",
        h,
        s,
        "dnswl@relay.example",
        "554 5.7.1 <dnswl@relay.example>: Recipient address rejected: Access denied",
    );
    refused(
        "127.0.0.1",
        h,
        s,
        "dnswltemp@relay.example",
        "450 4.7.1 <127.0.0.1>: Client host rejected: Service unavailable",
    );

    // reject_rhsbl_sender.
    refused(
        "127.0.0.1",
        h,
        "a@spam.example",
        "rhsbl@relay.example",
        "554 5.7.1 Service unavailable; Sender address [spam.example] blocked using dbl.test",
    );
    ok("127.0.0.1", h, s, "rhsbl@relay.example");

    // The other RHSBL forms, and permit_rhswl_client: the client's
    // confirmed name, its unconfirmed name, the HELO name, the
    // recipient's domain.
    refused(
        "127.0.0.1",
        h,
        s,
        "rhsblclient@relay.example",
        "554 5.7.1 Service unavailable; Client host [localhost] blocked using dbl.test",
    );
    ok("127.0.0.78", h, s, "rhsblclient@relay.example");
    refused(
        "127.0.0.78",
        h,
        s,
        "rhsblrev@relay.example",
        "554 5.7.1 Service unavailable; Unverified Client host [liar.test] blocked using dbl.test",
    );
    refused(
        "127.0.0.1",
        "spam.example",
        s,
        "rhsblhelo@relay.example",
        "554 5.7.1 Service unavailable; Helo command [spam.example] blocked using dbl.test",
    );
    ok("127.0.0.1", h, s, "rhsblhelo@relay.example");
    refused(
        "127.0.0.1",
        h,
        s,
        "x@spam.example",
        "554 5.7.1 Service unavailable; Recipient address [spam.example] blocked using dbl.test",
    );
    ok("127.0.0.1", h, s, "rhswl@relay.example");
    refused(
        "127.0.0.78",
        h,
        s,
        "rhswl@relay.example",
        "554 5.7.1 <rhswl@relay.example>: Recipient address rejected: Access denied",
    );

    // reject_unknown_helo_hostname.
    ok("127.0.0.1", "helo-ok.test", s, "helo@relay.example");
    refused(
        "127.0.0.1",
        "helo-missing.test",
        s,
        "helo@relay.example",
        "450 4.7.1 <helo-missing.test>: Helo command rejected: Host not found",
    );

    // reject_unknown_sender_domain: MX, address only, none, null MX.
    ok("127.0.0.1", h, "a@a-only.test", "sender@relay.example");
    refused(
        "127.0.0.1",
        h,
        "a@no-such.test",
        "sender@relay.example",
        "450 4.1.8 <a@no-such.test>: Sender address rejected: Domain not found",
    );
    refused(
        "127.0.0.1",
        h,
        "a@nullmx.test",
        "sender@relay.example",
        "550 5.7.27 <a@nullmx.test>: Sender address rejected: Domain nullmx.test does not accept mail (nullMX)",
    );

    // check_sender_mx_access: the MX host by name, by address; OK is a
    // configuration error (it would let a sender allowlist itself).
    refused(
        "127.0.0.1",
        h,
        "a@badmx.test",
        "x@has-mx.test",
        "554 5.7.1 <a@badmx.test>: Sender address rejected: Sender MX is listed",
    );
    refused(
        "127.0.0.1",
        h,
        "a@byaddr.test",
        "x@has-mx.test",
        "554 5.7.1 <a@byaddr.test>: Sender address rejected: Sender MX address is listed",
    );
    refused(
        "127.0.0.1",
        h,
        "a@allowmx.test",
        "x@has-mx.test",
        "451 4.3.5 Server configuration error",
    );
    logged(&inst, "this is not allowed for security reasons");
    ok("127.0.0.1", h, "a@a-only.test", "x@has-mx.test");

    // check_sender_ns_access: has-mx.test has no NS of its own, so the
    // parent's (ns.test) answer, by name and by address; a domain without
    // name servers anywhere passes. check_sender_a_access: the domain's
    // own address.
    refused(
        "127.0.0.1",
        h,
        "a@has-mx.test",
        "ns@relay.example",
        "554 5.7.1 <a@has-mx.test>: Sender address rejected: Sender name server is listed",
    );
    refused(
        "127.0.0.1",
        h,
        "a@has-mx.test",
        "nsaddr@relay.example",
        "554 5.7.1 <a@has-mx.test>: Sender address rejected: Sender name server address is listed",
    );
    ok("127.0.0.1", h, "a@nowhere.invalid", "ns@relay.example");
    refused(
        "127.0.0.1",
        h,
        "a@at-listed.test",
        "a@relay.example",
        "554 5.7.1 <a@at-listed.test>: Sender address rejected: Sender domain is at a listed address",
    );
    ok("127.0.0.1", h, "a@a-only.test", "a@relay.example");

    // reject_unknown_recipient_domain.
    ok("127.0.0.1", h, s, "x@has-mx.test");
    refused(
        "127.0.0.1",
        h,
        s,
        "x@no-such.test",
        "450 4.1.2 <x@no-such.test>: Recipient address rejected: Domain not found",
    );
    refused(
        "127.0.0.1",
        h,
        s,
        "x@nullmx.test",
        "556 5.1.10 <x@nullmx.test>: Recipient address rejected: Domain nullmx.test does not accept mail (nullMX)",
    );
}

#[test]
fn a_dns_server_that_never_answers_defers_never_rejects() {
    let mut inst = Instance::new("");
    // A UDP socket nobody reads: every query times out.
    let silent = std::net::UdpSocket::bind((inst.ip.as_str(), 0)).unwrap();
    inst.add_main_cf(&format!(
        "smtpd_error_sleep_time = 0\n\
         smtpd_peername_lookup = yes\n\
         ipc_query_timeout = 2s\n\
         dns_nameservers = {}\n\
         smtpd_client_restrictions = reject_unknown_client_hostname\n\
         smtpd_sender_restrictions = reject_rbl_client zen.test, reject_unknown_sender_domain\n",
        silent.local_addr().unwrap()
    ));
    inst.start();
    let mut c = Smtp::connect_from("127.0.0.1", &inst.ip, inst.smtp_port);
    assert!(c.reply().starts_with("220"));
    assert!(c.cmd("EHLO client.example").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
    // The list that cannot be asked counts as not listed; the domain that
    // cannot be checked is deferred.
    assert_eq!(
        c.cmd("RCPT TO:<root@localhost>").trim_end(),
        "450 4.1.8 <a@example.org>: Sender address rejected: Domain not found"
    );
    c.cmd("QUIT");
    logged(&inst, "1.0.0.127.zen.test: RBL lookup error");
    // A client whose PTR lookup times out is deferred, never refused.
    let mut c = Smtp::connect_from("127.0.0.9", &inst.ip, inst.smtp_port);
    assert!(c.reply().starts_with("220"));
    assert!(c.cmd("EHLO client.example").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<>").starts_with("250"));
    assert_eq!(
        c.cmd("RCPT TO:<root@localhost>").trim_end(),
        "450 4.7.25 Client host rejected: cannot find your hostname, [127.0.0.9]"
    );
    c.cmd("QUIT");
}

/// Every check_*_{a,mx,ns}_access form, each with one refusal and one
/// pass. good.test (the confirmed name and reverse name of 127.0.0.77, a
/// HELO name, a sender or recipient domain) has no MX, so it is its own
/// mail server, at the listed address 127.0.0.77; its name server is the
/// parent's, ns.test. localhost (127.0.0.1's name) and nowhere.invalid
/// have neither.
#[test]
fn every_server_access_form_refuses_and_passes() {
    let mut inst = Instance::new("");
    let server = dns::start_zones(
        &inst.ip,
        &[
            ("test.", TEST_ZONE),
            ("0.0.127.in-addr.arpa.", REVERSE_ZONE),
        ],
    );
    let listed = table(
        &inst,
        "servers",
        "ns.test REJECT Name server listed\n127.0.0.77 REJECT Address listed\n",
    );
    let subjects = [
        "client",
        "reverse_client_hostname",
        "helo",
        "sender",
        "recipient",
    ];
    let kinds = ["a", "mx", "ns"];
    let mut classes = Vec::new();
    let mut dispatch = String::new();
    for s in subjects {
        for k in kinds {
            let class = format!("{s}_{k}");
            classes.push(format!("{class} = check_{s}_{k}_access {listed}, permit\n"));
            if s == "recipient" {
                dispatch.push_str(&format!(
                    "{k}@good.test {class}\n{k}@nowhere.invalid {class}\n"
                ));
            } else {
                dispatch.push_str(&format!("{class}@relay.example {class}\n"));
            }
        }
    }
    let dispatch = table(&inst, "dispatch", &dispatch);
    let names: Vec<String> = subjects
        .iter()
        .flat_map(|s| kinds.iter().map(move |k| format!("{s}_{k}")))
        .collect();
    inst.add_main_cf(&format!(
        "smtpd_error_sleep_time = 0\n\
         smtpd_peername_lookup = yes\n\
         dns_nameservers = {}\n\
         mynetworks = 10.0.0.0/8\n\
         relay_domains = relay.example, good.test\n\
         smtpd_restriction_classes = {}\n{}\
         smtpd_relay_restrictions =\n\
         smtpd_recipient_restrictions = check_recipient_access {dispatch}, permit\n",
        server.addr,
        names.join(", "),
        classes.concat(),
    ));
    inst.start();
    let why = |k: &str| {
        if k == "ns" {
            "Name server listed"
        } else {
            "Address listed"
        }
    };
    for k in kinds {
        // Each (source, HELO, sender, recipient) of the refusal, its
        // reply, and the pass that changes only the subject.
        let cases = [
            (
                (
                    "127.0.0.77",
                    "c.example",
                    "a@c.example",
                    format!("client_{k}@relay.example"),
                ),
                format!("<good.test[127.0.0.77]>: Client host rejected: {}", why(k)),
                ("127.0.0.1", "c.example", "a@c.example"),
            ),
            (
                (
                    "127.0.0.77",
                    "c.example",
                    "a@c.example",
                    format!("reverse_client_hostname_{k}@relay.example"),
                ),
                format!("<good.test>: Unverified Client host rejected: {}", why(k)),
                ("127.0.0.1", "c.example", "a@c.example"),
            ),
            (
                (
                    "127.0.0.1",
                    "good.test",
                    "a@c.example",
                    format!("helo_{k}@relay.example"),
                ),
                format!("<good.test>: Helo command rejected: {}", why(k)),
                ("127.0.0.1", "localhost", "a@c.example"),
            ),
            (
                (
                    "127.0.0.1",
                    "c.example",
                    "a@good.test",
                    format!("sender_{k}@relay.example"),
                ),
                format!("<a@good.test>: Sender address rejected: {}", why(k)),
                ("127.0.0.1", "c.example", "a@localhost"),
            ),
        ];
        for ((src, helo, sender, rcpt), text, (psrc, phelo, psender)) in cases {
            let r = attempt(&inst, src, helo, sender, &rcpt);
            assert_eq!(r, format!("554 5.7.1 {text}"), "{rcpt}");
            logged(
                &inst,
                &format!("554 5.7.1 {text}; from=<{sender}> to=<{rcpt}> proto=ESMTP helo=<{helo}>"),
            );
            let r = attempt(&inst, psrc, phelo, psender, &rcpt);
            assert!(
                r.starts_with("250 2.1.5"),
                "{rcpt} from {psrc} {phelo} {psender}: {r}"
            );
        }
        let rcpt = format!("{k}@good.test");
        let r = attempt(&inst, "127.0.0.1", "c.example", "a@c.example", &rcpt);
        let text = format!("<{rcpt}>: Recipient address rejected: {}", why(k));
        assert_eq!(r, format!("554 5.7.1 {text}"));
        logged(
            &inst,
            &format!("NOQUEUE: reject: RCPT from localhost[127.0.0.1]: 554 5.7.1 {text};"),
        );
        let r = attempt(
            &inst,
            "127.0.0.1",
            "c.example",
            "a@c.example",
            &format!("{k}@nowhere.invalid"),
        );
        assert!(r.starts_with("250 2.1.5"), "{k}@nowhere.invalid: {r}");
    }
}

/// inet_protocols = ipv4: no AAAA question ever reaches the DNS server
/// (its query log), where the default asks for both families.
#[test]
fn inet_protocols_ipv4_never_asks_for_aaaa() {
    let run = |protocols: &str| {
        let mut inst = Instance::new("");
        let server = dns::start(&inst.ip, "test.", TEST_ZONE);
        inst.add_main_cf(&format!(
            "smtpd_error_sleep_time = 0\n\
             dns_nameservers = {}\n\
             inet_protocols = {protocols}\n\
             smtpd_sender_restrictions = reject_unknown_sender_domain\n",
            server.addr
        ));
        inst.start();
        // a-only.test has no MX: its addresses are looked up.
        let r = attempt(
            &inst,
            "127.0.0.1",
            "client.example",
            "a@a-only.test",
            "root@localhost",
        );
        assert!(r.starts_with("250"), "{r}");
        let q = server.queries();
        assert!(
            q.iter().any(|(n, t)| n == "a-only.test." && t == "A"),
            "{q:?}"
        );
        q.iter().any(|(_, t)| t == "AAAA")
    };
    assert!(!run("ipv4"), "an AAAA question with inet_protocols = ipv4");
    assert!(run("all"), "no AAAA question with inet_protocols = all");
}
