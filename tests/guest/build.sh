#!/usr/bin/env bash
# tests/guest/build.sh [--force] - build (or find in the cache) the test
# guest: a Debian cloud kernel and an initramfs with busybox, /init, the
# workload churn and qemu-ga.
#
# Prints, on stdout, shell assignments to eval:
#   GUEST_VMLINUZ=/abs/path/vmlinuz
#   GUEST_INITRAMFS=/abs/path/initramfs.gz
#   GUEST_KVER=6.1.0-NN-cloud-amd64
# Progress goes to stderr; nothing when the build is cached.
#
# Cache: $CACHE/guest/<key>/ (CACHE = ${XDG_CACHE_HOME:-$HOME/.cache}/snapctl),
# key = a hash of this script, init, churn.c, the kernel package version and
# the bytes of busybox, qemu-ga and its libraries; the kernel .deb is kept in
# $CACHE/debs/.  A change of any input builds a new guest; the three newest
# builds are kept.  Needs the packages tests/deps.sh installs; downloads the
# kernel with apt-get (no root needed).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/snapctl
DEBS=$CACHE/debs
GUESTS=$CACHE/guest
MODULES=(virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev
	virtio_pci virtio_blk virtio_console)
FORCE=0
[ "${1:-}" = --force ] && FORCE=1

say() { echo "guest/build.sh: $*" >&2; }
die() { say "$*"; exit 1; }

for c in gcc cpio gzip dpkg-deb apt-get ldd sha256sum flock; do
	command -v "$c" >/dev/null || die "$c not found (run tests/deps.sh)"
done
BUSYBOX=/bin/busybox
QGA=/usr/bin/qemu-ga
[ -x "$QGA" ] || QGA=/usr/sbin/qemu-ga
[ -x "$BUSYBOX" ] || die "$BUSYBOX not found (install busybox-static: tests/deps.sh)"
[ -x "$QGA" ] || die "qemu-ga not found (install qemu-guest-agent: tests/deps.sh)"
"$BUSYBOX" --list >/dev/null 2>&1 || die "$BUSYBOX is not a busybox with --list"
file_is_static() { ! ldd "$1" >/dev/null 2>&1; }
file_is_static "$BUSYBOX" || die "$BUSYBOX is not static (install busybox-static)"

# The kernel: the package linux-image-cloud-amd64 depends on, in the
# candidate version apt would install ("Depends: linux-image-X (= V)").
# apt-cache takes ~1 s where apt's own cache is disabled (Debian's docker
# images), so the answer is remembered until the package lists change.
# Without apt lists, fall back to a kernel already downloaded.
mkdir -p "$GUESTS"
lists_id=$(ls -l --time-style=+%s /var/lib/apt/lists/ 2>/dev/null | sha256sum | cut -c1-16)
resolved=$GUESTS/.kernel-resolved
kpkg='' kver=''
if [ -f "$resolved" ]; then
	read -r rid kpkg kver <"$resolved" || true
	[ "${rid:-}" = "$lists_id" ] || kpkg='' kver=''
fi
if [ -z "$kpkg" ]; then
	read -r kpkg kver < <(apt-cache show --no-all-versions linux-image-cloud-amd64 2>/dev/null |
		sed -n 's/^Depends: //p' | tr ',' '\n' |
		sed -n 's/^ *\(linux-image-[^ ]*\) *(= *\([^)]*\)).*/\1 \2/p' | head -n1) || true
	if [ -n "${kpkg:-}" ] && [ -n "${kver:-}" ]; then
		echo "$lists_id $kpkg $kver" >"$resolved.$$" && mv "$resolved.$$" "$resolved"
	fi
fi
if [ -n "$kpkg" ] && [ -n "$kver" ]; then
	kdeb=$DEBS/${kpkg}_${kver//:/%3a}_amd64.deb
else
	kdeb=$(ls -t "$DEBS"/linux-image-*-cloud-amd64_*.deb 2>/dev/null | head -n1 || true)
	[ -n "$kdeb" ] || die "cannot resolve linux-image-cloud-amd64 (apt lists missing? run tests/deps.sh)"
	kpkg=$(basename "$kdeb")
	kpkg=${kpkg%%_*}
fi
KVER=${kpkg#linux-image-}

# Libraries qemu-ga loads, and the dynamic loader.
mapfile -t LIBS < <(ldd "$QGA" | awk '
	$2 == "=>" && $3 ~ /^\// { print $3 }
	$1 ~ /^\// { print $1 }')
[ ${#LIBS[@]} -gt 0 ] || die "ldd $QGA listed no libraries"

key=$( {
	echo "kernel $(basename "$kdeb")"
	sha256sum "$HERE/build.sh" "$HERE/init" "$HERE/churn.c" "$BUSYBOX" "$QGA" "${LIBS[@]}" | cut -d" " -f1
	gcc -dumpfullversion 2>/dev/null || gcc -dumpversion
} | sha256sum | cut -c1-16)
OUT=$GUESTS/$key

emit() {
	echo "GUEST_VMLINUZ=$OUT/vmlinuz"
	echo "GUEST_INITRAMFS=$OUT/initramfs.gz"
	echo "GUEST_KVER=$KVER"
}

if [ $FORCE -eq 0 ] && [ -f "$OUT/.complete" ]; then
	emit
	exit 0
fi

mkdir -p "$GUESTS" "$DEBS"
exec 9>"$GUESTS/.lock"
flock 9
if [ $FORCE -eq 0 ] && [ -f "$OUT/.complete" ]; then	# built meanwhile
	emit
	exit 0
fi

start=$(date +%s)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/snapctl-guest.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
LOG=$WORK/log
run() {
	if ! "$@" >>"$LOG" 2>&1 </dev/null; then
		say "failed: $*"
		tail -n 20 "$LOG" >&2
		exit 1
	fi
}

if [ ! -f "$kdeb" ]; then
	say "downloading $kpkg"
	# As root apt downloads as user _apt: give it a directory it can write.
	dl=$WORK/dl
	mkdir -p "$dl"
	if [ "$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then
		chown _apt "$dl"
	fi
	(cd "$dl" && run apt-get -q -o Dpkg::Use-Pty=0 download "$kpkg${kver:+=$kver}")
	f=$(ls "$dl"/*.deb)
	mv "$f" "$kdeb.tmp"
	mv "$kdeb.tmp" "$kdeb"
	# Older kernels are of no further use.
	for d in "$DEBS"/linux-image-*.deb; do
		[ "$d" = "$kdeb" ] || rm -f "$d"
	done
fi

say "building the guest ($KVER) in $OUT"
K=$WORK/kernel
mkdir -p "$K"
dpkg-deb --fsys-tarfile "$kdeb" | tar -x -C "$K" --wildcards \
	'./boot/vmlinuz-*' './lib/modules/*/kernel/drivers/*' 2>>"$LOG" ||
	die "cannot unpack $kdeb"
vmlinuz=$(ls "$K"/boot/vmlinuz-* | head -n1)
[ -f "$vmlinuz" ] || die "no vmlinuz in $kdeb"

R=$WORK/root
mkdir -p "$R"/{bin,sbin,dev,proc,sys,run,tmp,var,etc,root,usr/bin,lib/modules,lib/x86_64-linux-gnu,lib64}

# Modules, decompressed if the package compresses them.
for m in "${MODULES[@]}"; do
	f=$(find "$K/lib/modules" \( -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" -o -name "$m.ko.gz" \) | head -n1)
	[ -n "$f" ] || die "module $m not in $kdeb"
	case $f in
	*.ko.xz) xz -dc "$f" >"$R/lib/modules/$m.ko" ;;
	*.ko.zst) zstd -q -dc "$f" >"$R/lib/modules/$m.ko" ;;
	*.ko.gz) gzip -dc "$f" >"$R/lib/modules/$m.ko" ;;
	*) cp "$f" "$R/lib/modules/$m.ko" ;;
	esac
done

# busybox and its applets (symlinks in /bin).
cp "$BUSYBOX" "$R/bin/busybox"
for a in $("$BUSYBOX" --list); do
	[ "$a" = busybox ] || ln -s busybox "$R/bin/$a"
done

# The workload, static.
run gcc -static -O2 -Wall -Wextra -Werror -o "$R/bin/churn" "$HERE/churn.c"
strip "$R/bin/churn" 2>/dev/null || true

# qemu-ga, its libraries (at the paths ldd printed, and in
# /lib/x86_64-linux-gnu, which /init puts in LD_LIBRARY_PATH) and the loader.
cp "$QGA" "$R/usr/bin/qemu-ga"
for l in "${LIBS[@]}"; do
	mkdir -p "$R$(dirname "$l")"
	cp -L "$l" "$R$l"
	[ -e "$R/lib/x86_64-linux-gnu/$(basename "$l")" ] ||
		cp -L "$l" "$R/lib/x86_64-linux-gnu/"
done

cp "$HERE/init" "$R/init"
chmod 755 "$R/init" "$R/bin/churn"

mkdir -p "$WORK/out"
cp "$vmlinuz" "$WORK/out/vmlinuz"
(cd "$R" && find . -mindepth 1 | LC_ALL=C sort |
	cpio -o -H newc --reproducible -R 0:0 --quiet) | gzip -9 -n >"$WORK/out/initramfs.gz"
echo "$KVER" >"$WORK/out/kernel-version"
touch "$WORK/out/.complete"
rm -rf "$OUT"
mv "$WORK/out" "$OUT"

# Keep the three newest builds.
ls -1dt "$GUESTS"/*/ 2>/dev/null | tail -n +4 | while read -r d; do rm -rf "$d"; done
say "built in $(($(date +%s) - start)) s: initramfs $(stat -c %s "$OUT/initramfs.gz") bytes"
emit
