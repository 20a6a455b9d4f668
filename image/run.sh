#!/usr/bin/env bash
# Boots a built image in qemu, for a look by hand: the serial console on
# this terminal, the guest's port 25 on 127.0.0.1:2525 and 587 on
# 127.0.0.1:2587. The data disk is made (blank) when it does not exist.
#
#   image/run.sh [IMAGE] [DATA]
set -euo pipefail
cd "$(dirname "$0")/.."
img="${1:-$(ls -t target/image/postern-*.img | head -1)}"
data="${2:-target/image/data.img}"
[ -f "$data" ] || truncate -s 512M "$data"
accel=tcg
[ -w /dev/kvm ] && accel=kvm
exec qemu-system-x86_64 -machine q35,accel=$accel -m 256 -smp 2 -nographic \
    -drive file="$img",format=raw,if=virtio,readonly=on \
    -drive file="$data",format=raw,if=virtio,cache=writeback \
    -device virtio-rng-pci \
    -netdev user,id=n0,restrict=off,hostfwd=tcp:127.0.0.1:2525-:25,hostfwd=tcp:127.0.0.1:2587-:587 \
    -device virtio-net-pci,netdev=n0
