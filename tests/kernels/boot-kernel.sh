#!/usr/bin/env bash
# tests/kernels/boot-kernel.sh SUITE GUEST-SCRIPT [FILE...]
#
# Boots a real Debian kernel under QEMU with a throw-away initramfs
# (busybox, kmod, this host's nft and ip with their libraries, the kernel's
# own net/netfilter modules), runs GUEST-SCRIPT as root inside it, powers
# off and exits with the script's status (99: no result, e.g. a hang). The
# script's output (stdout+stderr) is printed on stdout. FILEs (the release
# portguardd and guardctl, say) land in the guest's /payload, with the
# shared libraries they need at their host paths.
#
#   SUITE: bullseye (5.10) | bookworm (6.1) | trixie (6.12) |
#          trixie-backports | sid (7.x): the suite's linux-image-amd64
#
# Env: WORK=/var/cache/portguard-tests/kernels (apt state, .debs, kernels,
#      initramfs; see "The cache" below)   MEM=1G   TIMEOUT=300 (seconds)
#      APPEND='K=V ...' extra kernel command line; unknown K=V reach the
#      guest script as environment variables.
#      REFRESH=1: look the suite's kernel up again on the mirror.
#
# Adapted from ../shared/recipes/boot-kernel-vm.sh. Why it is built this way:
# - /dev/kvm on the CI machines is kvm_pvm (no VMX/SVM), which cannot run a
#   stock kernel; so TCG, one vCPU (one core busy): timings inside the guest
#   are inflated, semantics are real.
# - The uncompressed vmlinux is booted through its PVH entry (no BIOS, no
#   decompressor): about twice as fast as the bzImage.
# - Debian's 7.x kernels are split (linux-binary-, linux-modules-,
#   linux-base-).
# - The cache: a suite's kernel version floats and superseded versions leave
#   the mirror, so the first lookup of a suite is kept (the apt lists in
#   $WORK/apt/SUITE), its .debs are kept in $WORK/debs and the unpacked
#   kernel in $WORK/k/KVER. A later run boots exactly that kernel without
#   the network; REFRESH=1 moves to the suite's current kernel.
# Nothing touches the host's network stack or ruleset: everything happens
# inside the guest. Needs root, qemu-system-x86, kmod, cpio, busybox-static.
set -euo pipefail
shopt -s inherit_errexit
WORK=${WORK:-/var/cache/portguard-tests/kernels}
MEM=${MEM:-1G}
TIMEOUT=${TIMEOUT:-300}
suite=${1:?suite}
script=${2:?guest script}
shift 2
MIRROR=${MIRROR:-$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
[ -n "$MIRROR" ] || MIRROR=$(awk '/^deb / && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$MIRROR" ] || MIRROR=http://deb.debian.org/debian
log() { echo "boot-kernel: $*" >&2; }

# ---- 1. the kernel: the suite's linux-image-amd64 target, fetched once ----
mkdir -p "$WORK"
exec 9>"$WORK/.lock" # one fetch or initramfs build at a time
flock 9
state=$WORK/apt/$suite
mkdir -p "$state/lists/partial" "$WORK/debs" "$WORK/k"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR $suite main" >"$state/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$state/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$state/lists" -o "Dir::Cache::archives=$WORK/debs"
  -o Dir::State::status=/dev/null -o APT::Sandbox::User=root)
if [ "${REFRESH:-0}" = 1 ] || [ ! -s "$state/kver" ]; then
  apt-get "${apt_opts[@]}" update -qq >&2
  pkg=$(apt-cache "${apt_opts[@]}" depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  [ -n "$pkg" ] || { log "no linux-image-amd64 in $suite"; exit 2; }
  kver=${pkg#linux-image-}
  # Debian's 7.x packaging: linux-image-V is empty and depends on
  # linux-binary-V (vmlinuz), linux-modules-V and linux-base-V (config)
  pkgs="$pkg $(apt-cache "${apt_opts[@]}" depends "$pkg" 2>/dev/null |
    awk -v v="$kver" '$1 ~ /Depends:/ && ($2 == "linux-binary-" v || $2 == "linux-modules-" v || $2 == "linux-base-" v) {print $2}' |
    sort -u | tr '\n' ' ')"
  for p in $pkgs; do
    ls "$WORK"/debs/"${p}"_*.deb >/dev/null 2>&1 || (cd "$WORK/debs" && apt-get "${apt_opts[@]}" download "$p" >&2)
  done
  echo "$pkgs" >"$state/pkgs"
  echo "$kver" >"$state/kver"
fi
kver=$(cat "$state/kver")
# Unpacked from the cached .debs: only what the guest needs (the image, the
# net/crypto/lib modules, veth, and vxlan for Docker's overlay networks in
# tests/kernels/swarm_mesh.sh). The marker names this layout.
if [ ! -e "$WORK/k/$kver/.unpacked-v3" ]; then
  rm -rf "$WORK/k/$kver" "$WORK/k/$kver.tmp" "$WORK/img/$kver"
  mkdir -p "$WORK/k/$kver.tmp"
  for p in $(cat "$state/pkgs"); do
    dpkg-deb --fsys-tarfile "$WORK"/debs/"${p}"_*.deb | tar -x -C "$WORK/k/$kver.tmp" --wildcards \
      './boot/*' '*/modules/*/vmlinuz' '*/modules/*/config*' '*/modules/*/modules.*' \
      '*/modules/*/kernel/net/*' '*/modules/*/kernel/lib/*' '*/modules/*/kernel/crypto/*' \
      '*/modules/*/kernel/arch/x86/crypto/*' '*/modules/*/kernel/drivers/net/veth.ko*' \
      '*/modules/*/kernel/drivers/net/vxlan*' 2>/dev/null || true
  done
  [ -n "$(ls "$WORK/k/$kver.tmp"/boot/vmlinuz-* "$WORK/k/$kver.tmp"/usr/lib/modules/*/vmlinuz 2>/dev/null || true)" ] ||
    { log "no vmlinuz in $(cat "$state/pkgs")"; exit 2; }
  touch "$WORK/k/$kver.tmp/.unpacked-v3"
  mv "$WORK/k/$kver.tmp" "$WORK/k/$kver"
fi
kdir=$WORK/k/$kver
moddir=$(ls -d "$kdir"/lib/modules/"$kver" "$kdir"/usr/lib/modules/"$kver" 2>/dev/null | head -1 || true)
[ -n "$moddir" ] || { log "no modules for $kver in $kdir"; exit 2; }

# ---- 2. the base initramfs for this kernel, built once ----
img=$WORK/img/$kver
if [ ! -s "$img/base.cpio" ]; then
  log "building the initramfs for $kver"
  root=$img/root
  rm -rf "$img"
  mkdir -p "$root"/{bin,sbin,lib64,etc,proc,sys,dev,tmp,run,payload,var/lib,lib/modules/"$kver"/kernel}
  cp /usr/bin/busybox "$root/bin/busybox"
  for a in $(busybox --list); do [ -e "$root/bin/$a" ] || ln -s busybox "$root/bin/$a"; done
  rm -f "$root"/bin/{modprobe,ip,depmod,insmod,lsmod,rmmod,modinfo}
  copy_bin() { # host binary -> /bin, its shared libraries at the same paths
    cp -L "$1" "$root/bin/$(basename "$1")"
    ldd "$1" | awk '/=> \//{print $3} /^\t\/lib64/{print $1}' | while read -r lib; do
      mkdir -p "$root$(dirname "$lib")"
      cp -L "$lib" "$root$lib"
    done
  }
  copy_bin /usr/sbin/nft
  copy_bin /bin/ip
  copy_bin /bin/kmod
  for a in modprobe insmod lsmod rmmod modinfo depmod; do ln -s ../bin/kmod "$root/sbin/$a"; done
  ln -s ../bin/ip "$root/sbin/ip"
  for d in net/netfilter net/ipv4 net/ipv6 net/bridge net/core net/sched net/netlink net/packet \
    net/unix net/llc net/802 lib crypto arch/x86/crypto drivers/net; do
    [ -d "$moddir/kernel/$d" ] || continue
    mkdir -p "$root/lib/modules/$kver/kernel/$d"
    cp -a "$moddir/kernel/$d/." "$root/lib/modules/$kver/kernel/$d/"
  done
  find "$root/lib/modules" -name '*.ko.xz' -exec xz -d {} +
  find "$root/lib/modules" -name '*.ko.zst' -exec zstd -q -d --rm {} +
  cp "$moddir"/modules.builtin* "$moddir"/modules.order "$root/lib/modules/$kver/" 2>/dev/null || true
  depmod -b "$root" "$kver"
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
  printf 'root:x:0:\n' >"$root/etc/group"
  cp /etc/protocols /etc/services "$root/etc/" 2>/dev/null || true
  # ttyS0: the kernel console (a file on the host); ttyS1: the script's output
  cat >"$root/init" <<'EOF'
#!/bin/sh
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp; mount -t tmpfs -o mode=755 run /run
echo /sbin/modprobe >/proc/sys/kernel/modprobe
ip link set lo up
exec >/dev/ttyS1 2>&1
echo "=== guest up: $(uname -r), uptime $(cut -d' ' -f1 /proc/uptime) s"
cd /payload; PATH=/payload:/bin:/sbin timeout -s KILL "${GUEST_TIMEOUT:-240}" sh /payload/guest.sh; rc=$?
echo "=== guest done: rc=$rc, uptime $(cut -d' ' -f1 /proc/uptime) s"
sync; poweroff -f; echo o >/proc/sysrq-trigger
EOF
  chmod +x "$root/init"
  (cd "$root" && find . | cpio -o -H newc --quiet) >"$img/base.cpio.tmp"
  mv "$img/base.cpio.tmp" "$img/base.cpio"
  rm -rf "$root"
fi

# ---- 3. the vmlinux for a PVH boot, unpacked once ----
vmlinuz=$(ls "$kdir"/boot/vmlinuz-* "$moddir"/vmlinuz 2>/dev/null | head -1 || true)
vmlinux=$(dirname "$vmlinuz")/vmlinux
is_elf() { [ "$(head -c 4 "$1" 2>/dev/null | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; }
if [ ! -s "$vmlinux" ]; then
  for m in 'xz:\xfd7zXZ\x00' 'zstd:\x28\xb5\x2f\xfd' 'gzip:\x1f\x8b\x08'; do
    off=$(LC_ALL=C grep -obUaP "${m#*:}" "$vmlinuz" | head -1 | cut -d: -f1 || true)
    [ -n "$off" ] || continue
    tail -c +$((off + 1)) "$vmlinuz" | "${m%%:*}" -dc 2>/dev/null >"$vmlinux.tmp" || true
    is_elf "$vmlinux.tmp" && break
  done
  if is_elf "$vmlinux.tmp"; then mv "$vmlinux.tmp" "$vmlinux"; else
    rm -f "$vmlinux.tmp"
    log "could not unpack vmlinux; booting the bzImage"
  fi
fi
[ -s "$vmlinux" ] && vmlinuz=$vmlinux
flock -u 9

# ---- 4. per-run payload (guest script + files), appended to the base ----
run=$(mktemp -d "$WORK/run.XXXXXX")
trap 'rm -rf "$run"' EXIT
mkdir -p "$run/root/payload"
cp "$script" "$run/root/payload/guest.sh"
for f in "$@"; do
  cp -L "$f" "$run/root/payload/"
  { ldd "$f" 2>/dev/null || true; } | awk '/=> \//{print $3}' | while read -r lib; do
    mkdir -p "$run/root$(dirname "$lib")"
    cp -L "$lib" "$run/root$lib"
  done
done
(cd "$run/root" && find . | cpio -o -H newc --quiet) >"$run/payload.cpio"
cat "$img/base.cpio" "$run/payload.cpio" >"$run/initrd"

# ---- 5. boot ----
start=$EPOCHREALTIME
log "booting $kver (tcg, 1 vCPU), console log: $WORK/console-$kver.log"
set +e
timeout -s KILL "$TIMEOUT" qemu-system-x86_64 -accel tcg,thread=single -cpu max -m "$MEM" -smp 1 \
  -nodefaults -no-user-config -display none -no-reboot -monitor none \
  -serial "file:$WORK/console-$kver.log" -serial stdio \
  -kernel "$vmlinuz" -initrd "$run/initrd" \
  -append "console=ttyS0 panic=-1 rdinit=/init quiet loglevel=4 GUEST_TIMEOUT=$((TIMEOUT - 30)) ${APPEND:-}" </dev/null |
  while IFS= read -r line; do printf '%s\n' "${line%$'\r'}"; done | tee "$run/out"
set -e
awk -v a="$start" -v b="$EPOCHREALTIME" -v k="$kver" 'BEGIN { printf "boot-kernel: %s: qemu ran %.1f s\n", k, b - a }' >&2
rc=$(sed -n 's/.*=== guest done: rc=\([0-9]*\).*/\1/p' "$run/out" | tail -1)
exit "${rc:-99}"
