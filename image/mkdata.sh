#!/usr/bin/env bash
# Makes a data disk for the appliance image: an ext4 file system labelled
# postern-data, optionally seeded with the files of SEED (for example
# SEED/etc/postern/main.cf, SEED/etc/postern/aliases). A blank disk works
# too: the image makes the file system itself on first boot.
#
#   image/mkdata.sh OUT.img SIZE_MB [SEED]
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: image/mkdata.sh OUT.img SIZE_MB [SEED]" >&2; exit 2; }
out="$1" size="$2" seed="${3:-}"
rm -f "$out"
truncate -s "${size}M" "$out"
if [ -n "$seed" ]; then
    mkfs.ext4 -q -F -L postern-data -d "$seed" "$out"
else
    mkfs.ext4 -q -F -L postern-data "$out"
fi
