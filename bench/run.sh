#!/usr/bin/env bash
# Runs Postern's benchmarks side by side with Debian's Postfix:
#   bench/run.sh throughput | memory | accept | tls | all
#   bench/run.sh backlog --count N --size BYTES
#   bench/run.sh tables
#   bench/run.sh screening     (the restriction set of an edge relay)
#   bench/run.sh milter        (one opendkim Milter signing every message)
#   bench/run.sh dkim          (built-in DKIM signing against Postfix + opendkim)
#   bench/run.sh postscreen    (memory per waiting client, connections screened per second)
# Installs postfix (Postfix itself, smtp-source, smtp-sink) when missing,
# builds Postern in release mode, and prints Markdown tables.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v smtp-source >/dev/null; then
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix python3 >/dev/null
fi
if { [ "${1:-}" = milter ] || [ "${1:-}" = dkim ]; } && ! command -v opendkim >/dev/null; then
    # No service may start (policy-rc.d): the benchmark runs its own.
    guard=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
        guard=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq opendkim opendkim-tools >/dev/null
    if [ -n "$guard" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
if ! command -v dnsmasq >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dnsmasq-base >/dev/null
fi
cargo build --release --locked -p postern
what="${1:-all}"
if [ "$what" = tables ]; then
    # Lookup speed of the table types (no MTA involved).
    exec cargo run -q --release --locked -p postern-config --example table_bench
fi
if [ "$what" = all ]; then
    for w in throughput memory accept tls; do /usr/bin/python3 bench/bench.py "$w"; done
else
    shift || true
    /usr/bin/python3 bench/bench.py "$what" "$@"
fi
