#!/usr/bin/env bash
# Runs Postern's whole test suite on a fresh Debian 12 machine that has the
# Rust toolchain: installs the system packages the tests use, checks the
# generated IPC code, builds, and runs every test (unit, IPC, jail probes,
# black-box tests with real clients). Run as root (the jail tests check the
# uid split) or with sudo available.
set -euo pipefail
cd "$(dirname "$0")/.."
# A one-shot build gains nothing from incremental state (2 GB of it).
export CARGO_INCREMENTAL=0

PACKAGES=(
    capnproto        # checks that ipc/src/generated matches ipc/schema
    swaks            # a real SMTP client
    libnet-ssleay-perl # swaks --tls
    python3          # Debian's python, for smtplib and aiosmtpd
    python3-aiosmtpd # a real SMTP server as the next hop
    openssl          # openssl s_client
    s-nail           # Debian's mailx, calling sendmail through its mta variable
    bsd-mailx        # the other mailx, calling sendmail through its sendmail variable
    git              # git send-email --sendmail-cmd
    git-email
    util-linux       # setpriv, to run an instance as an ordinary user
    postfix          # postmap -q: the oracle for tables; a real Postfix beside Postern (rewriting)
    postfix-pcre     # postmap -q on pcre: tables
    postsrsd         # a real tcp_table(5) server for tcp: tables
    dovecot-lmtpd    # a real LMTP server with a Maildir store (tests start their own)
    prometheus       # a real Prometheus scraping the metrics endpoint; promtool checks its output
    curl             # Prometheus's HTTP API, from the metrics test
    pflogsumm        # reads the mail log a default start writes (log tools test)
    fail2ban         # fail2ban-regex with Debian's stock postfix filter (its service never starts)
    postfix-policyd-spf-python  # policyd-spf: a real policy server (check_policy_service)
    haproxy          # a real load balancer sending PROXY v1 and v2 headers (its service never starts)
    python3-milter   # pymilter (libmilter): a real Milter making every change (tests/tools/test_milter.py)
    opendkim         # a real Milter signing and verifying DKIM (its service never starts)
    opendkim-tools   # opendkim-genkey, opendkim-testmsg
    python3-dkim     # dkimpy: checks opendkim's and Postern's signatures
    python3-dnspython # dkimpy's key lookups in the loopback DNS server
    rspamd           # a real Milter (its proxy worker), no Redis (its service never starts)
    testssl.sh       # testssl 3.0.8: protocols, ciphers and vulnerabilities of every TLS port
    gnutls-bin       # gnutls-cli: a client that asks smtpd for an RFC 7250 raw public key
    knot             # a real authoritative server signing the DANE test zones (its service never starts)
    unbound          # a real validating resolver in front of knot: DNSSEC answers with the AD bit
    knot-dnsutils    # kdig: the DANE tests check the validating path before they use it
    python3-jsonschema # checks TLS-RPT report JSON against the RFC 8460 schema
)
. scripts/packages.sh
ensure_packages "${PACKAGES[@]}"

echo "== format"
cargo fmt --all -- --check
echo "== generated IPC code is current"
cargo run -q --locked -p postern-ipc-codegen -- --check
echo "== build"
cargo build --locked --workspace --bins
echo "== one crypto provider"
# aws-lc-rs alone: no ring, no RustCrypto RSA or Ed25519 (mail-auth's
# other backends) in the binary.
if cargo tree --locked -e normal -p postern | grep -E " (ring|rsa|ed25519-dalek) v"; then
    echo "a second crypto implementation is in the dependency tree" >&2
    exit 1
fi
echo "== clippy"
cargo clippy -q --locked --workspace --all-targets -- -D warnings
echo "== tests"
report=target/tmp/fault-injection.txt
image_report=target/tmp/image-report.txt
rm -f "$report" "$image_report"
status=0
cargo test --locked --workspace || status=$?
# The kill -9 run's seed and counts (tests/tests/faults.rs), pass or fail.
if [ -f "$report" ]; then echo "== $(cat "$report")"; fi
# The appliance image's boot time, idle memory and pulled-plug summary
# (tests/tests/image.rs).
if [ -f "$image_report" ]; then sed 's/^/== /' "$image_report"; fi
exit $status
