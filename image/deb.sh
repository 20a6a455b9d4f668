#!/usr/bin/env bash
# Builds the Debian package: postern_VERSION_amd64.deb with the release
# binary, the sendmail/mailq/newaliases links, a systemd unit and a
# commented /etc/postern. Uses dpkg-deb only.
#
#   image/deb.sh [--version V] [--out DIR] [--bin PATH]
#
# Prints the package's path on the last line (default DIR: target/debian).
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD

out="$top/target/debian"
. image/args.sh
case "$version" in
[0-9]*) ;;
*) echo "a Debian version starts with a digit: $version" >&2; exit 2 ;;
esac
if [ -z "$bin" ]; then
    cargo build --release --locked -q -p postern
    bin="$top/target/release/postern"
fi

pkg="$out/work/postern"
rm -rf "$out/work"
mkdir -p "$pkg/DEBIAN" "$pkg/usr/sbin" "$pkg/usr/bin" "$pkg/usr/lib" \
    "$pkg/lib/systemd/system" "$pkg/etc/postern" "$pkg/usr/share/doc/postern"
install -m 755 "$bin" "$pkg/usr/sbin/postern"
strip --strip-all "$pkg/usr/sbin/postern"
ln -s postern "$pkg/usr/sbin/sendmail"
ln -s ../sbin/postern "$pkg/usr/lib/sendmail"
ln -s ../sbin/postern "$pkg/usr/bin/mailq"
ln -s ../sbin/postern "$pkg/usr/bin/newaliases"
install -m 644 image/debian/postern.service "$pkg/lib/systemd/system/postern.service"
install -m 644 image/debian/main.cf "$pkg/etc/postern/main.cf"
install -m 644 image/debian/master.cf "$pkg/etc/postern/master.cf"
for s in postinst prerm postrm; do
    install -m 755 "image/debian/$s" "$pkg/DEBIAN/$s"
done
printf '/etc/postern/main.cf\n/etc/postern/master.cf\n' >"$pkg/DEBIAN/conffiles"
cat >"$pkg/usr/share/doc/postern/copyright" <<EOF
Postern, a privilege-separated mail transfer agent for appliances.
See the project's repository for its licence and authors.
EOF
size=$(du -sk "$pkg" | cut -f1)
cat >"$pkg/DEBIAN/control" <<EOF
Package: postern
Version: $version
Architecture: amd64
Maintainer: Postern developers <postmaster@localhost>
Installed-Size: $size
Depends: libc6 (>= 2.34)
Provides: mail-transport-agent
Conflicts: mail-transport-agent
Replaces: mail-transport-agent
Section: mail
Priority: optional
Description: hardened, privilege-separated mail transfer agent
 Postern is a mail transfer agent for appliances and edge relays, written
 in Rust. Every daemon runs in its own process under its own uid, with no
 capabilities, seccomp, landlock and a private network namespace where it
 needs no network. It reads Postfix's main.cf and master.cf syntax and
 provides sendmail, mailq and newaliases.
EOF
mkdir -p "$out"
deb="$out/postern_${version}_amd64.deb"
dpkg-deb --root-owner-group --build "$pkg" "$deb" >/dev/null
rm -rf "$out/work"
echo "$deb"
