#!/usr/bin/env bash
# Builds Postern's appliance disk image: a BIOS-bootable x86-64 disk with
# a boot partition (syslinux, Debian's kernel, a small initramfs) and a
# read-only squashfs root (busybox-static, glibc, the release postern
# binary), checked against its SHA-256 at every boot.
#
#   image/build.sh [--version V] [--out DIR] [--bin PATH]
#
# Writes DIR/postern-V.img (default DIR: target/image) and prints its path
# on the last line. Everything comes from Debian's packages and this tree;
# nothing is downloaded but those packages, and the image needs no network
# at boot. See image/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD

out="$top/target/image"
. image/args.sh
case "$version" in
*[!A-Za-z0-9.+~-]* | "") echo "bad version string: $version" >&2; exit 2 ;;
esac

PACKAGES=(
    linux-image-amd64 # the kernel, and the modules the initramfs loads
    busybox-static    # the userland: init, sh, crond, syslogd, udhcpc
    e2fsprogs         # mke2fs and e2fsck for the data partition
    squashfs-tools    # mksquashfs: the read-only root
    syslinux          # the BIOS boot loader
    syslinux-common
    mtools            # writes the FAT boot partition without mounting it
    dosfstools        # mkfs.vfat
    fdisk             # sfdisk: the partition table
    cpio              # the initramfs
    binutils          # strip
    kmod              # modprobe --show-depends: the modules' load order
)
. scripts/packages.sh
ensure_packages "${PACKAGES[@]}"

if [ -z "$bin" ]; then
    echo "== cargo build --release"
    cargo build --release --locked -q -p postern
    bin="$top/target/release/postern"
fi

# The newest Debian kernel installed.
kver="$(cd /lib/modules && ls -d *-amd64 | sort -V | tail -1)"
kernel="/boot/vmlinuz-$kver"
[ -f "$kernel" ] || { echo "no kernel $kernel" >&2; exit 1; }

work="$out/work-$version"
rm -rf "$work"
mkdir -p "$work"
root="$work/root"
initrd="$work/initrd"

# --- the root file system -------------------------------------------------
echo "== root file system"
cp -a image/rootfs "$root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,lib/x86_64-linux-gnu,lib64,proc,sys,dev,run,tmp,var,data,root}
chmod 700 "$root/root"
cp /bin/busybox "$root/bin/busybox"
for applet in $(/bin/busybox --list-full); do
    [ -e "$root/$applet" ] || [ -L "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
done
install -m 755 "$bin" "$root/usr/sbin/postern"
strip --strip-all "$root/usr/sbin/postern"
for link in usr/sbin/sendmail usr/lib/sendmail usr/bin/mailq usr/bin/newaliases; do
    mkdir -p "$(dirname "$root/$link")"
    ln -sf /usr/sbin/postern "$root/$link"
done
# Real e2fsprogs for the data partition (busybox's mke2fs makes ext2 only).
for tool in /sbin/mke2fs /sbin/e2fsck; do
    rm -f "$root$tool"
    install -m 755 "$tool" "$root$tool"
done
cp /etc/mke2fs.conf "$root/etc/mke2fs.conf"
# The shared libraries those binaries link against.
for lib in $(for b in "$bin" /sbin/mke2fs /sbin/e2fsck; do ldd "$b"; done |
    awk '$3 ~ /^\// {print $3} $1 ~ /^\/.*\.so/ {print $1}' | sort -u); do
    cp -L "$lib" "$root$lib"
done
ln -sf /run/resolv.conf "$root/etc/resolv.conf"
printf 'POSTERN_IMAGE_VERSION=%s\n' "$version" >"$root/etc/postern-image-release"
cat >"$root/etc/os-release" <<EOF
NAME="Postern appliance"
ID=postern-appliance
VERSION_ID=$version
PRETTY_NAME="Postern appliance $version"
EOF

rootimg="$work/root.squashfs"
mksquashfs "$root" "$rootimg" -all-root -noappend -quiet -comp zstd -b 256K >/dev/null
rootsize=$(stat -c %s "$rootimg")
roothash=$(sha256sum "$rootimg" | cut -d' ' -f1)

# --- the initramfs --------------------------------------------------------
echo "== initramfs"
mkdir -p "$initrd"/{bin,dev,proc,sys,root,etc,lib/modules}
cp /bin/busybox "$initrd/bin/busybox"
for applet in sh mount umount insmod sleep cat head sha256sum cut switch_root poweroff echo mkdir; do
    ln -s busybox "$initrd/bin/$applet"
done
install -m 755 image/initramfs/init "$initrd/init"
echo "$rootsize" >"$initrd/etc/root.size"
echo "$roothash" >"$initrd/etc/root.sha256"
: >"$initrd/lib/modules/order"
for m in virtio_pci virtio_blk virtio_net virtio_rng virtio_console squashfs ext4 overlay; do
    modprobe -S "$kver" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
done | awk '!seen[$0]++' | while read -r ko; do
    name="$(basename "$ko")"
    cp "$ko" "$initrd/lib/modules/$name"
    echo "$name" >>"$initrd/lib/modules/order"
done
(cd "$initrd" && find . | sort | cpio -o -H newc -R 0:0 --quiet | gzip -9) >"$work/initrd.img"

# --- the boot partition and the disk --------------------------------------
echo "== disk"
cat >"$work/syslinux.cfg" <<EOF
SERIAL 0 115200
DEFAULT postern
PROMPT 0
TIMEOUT 0
LABEL postern
  KERNEL /vmlinuz
  INITRD /initrd.img
  APPEND console=ttyS0,115200 root=/dev/vda2 postern.data=/dev/vdb panic=10 loglevel=4
EOF
bootmb=32
bootimg="$work/boot.vfat"
rm -f "$bootimg"
mkfs.vfat -C -n POSTERNBOOT "$bootimg" $((bootmb * 1024)) >/dev/null
mcopy -i "$bootimg" "$kernel" ::/vmlinuz
mcopy -i "$bootimg" "$work/initrd.img" ::/initrd.img
mcopy -i "$bootimg" "$work/syslinux.cfg" ::/syslinux.cfg
syslinux --install "$bootimg"

# Partition 1 (FAT, bootable) at 1 MiB; partition 2 (the root) after it.
rootmb=$(((rootsize + 1048575) / 1048576 + 1))
disk="$out/postern-$version.img"
rm -f "$disk"
truncate -s $((1 + bootmb + rootmb))M "$disk"
sfdisk -q "$disk" <<EOF
label: dos
start=1MiB, size=${bootmb}MiB, type=6, bootable
start=$((1 + bootmb))MiB, size=${rootmb}MiB, type=83
EOF
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$disk" conv=notrunc bs=440 count=1 status=none
dd if="$bootimg" of="$disk" conv=notrunc bs=1M seek=1 status=none
dd if="$rootimg" of="$disk" conv=notrunc bs=1M seek=$((1 + bootmb)) status=none
cat >"$out/postern-$version.txt" <<EOF
version=$version
kernel=$kver
root_sha256=$roothash
root_bytes=$rootsize
disk_bytes=$(stat -c %s "$disk")
EOF
rm -rf "$work"
echo "== built $(du -h "$disk" | cut -f1) image, root $((rootsize / 1024)) KiB, kernel $kver"
echo "$disk"
