# Sourced by image/build.sh and image/deb.sh: [--version V] [--out DIR]
# [--bin PATH] into $version (default: the workspace's), $out (the caller's
# default unless given) and $bin (empty: build the release binary).
version=""
bin=""
while [ $# -gt 0 ]; do
    case "$1" in
    --version) version="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    *) echo "usage: $0 [--version V] [--out DIR] [--bin PATH]" >&2; exit 2 ;;
    esac
done
if [ -z "$version" ]; then
    version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
fi
