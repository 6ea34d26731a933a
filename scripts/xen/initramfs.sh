#!/bin/bash
# initramfs.sh RUNNER — pack the dom0 initramfs and lay out the boot images in $XT_OUT:
#   xen.elf     the hypervisor, uncompressed (QEMU's multiboot loader wants a plain 32-bit ELF)
#   vmlinuz     the dom0 kernel (Debian's linux-image, PV dom0 capable)
#   initrd.img  busybox, both xenstoreds, xen-init-dom0, xl, vchan-socket-proxy, the Xen kernel modules, the
#               runner, /init, and /opt/domu: the test domU (the same kernel, its own tiny initramfs, its xl
#               configs) and the hostile guest's initramfs (busybox and this runner again); with XT_QDISK=1
#               (make xen-bench) also QEMU's Xen device model, for the `bench` group's qdisk backend
# Everything comes from $XT_SYSROOT (fetch.sh); shared libraries are resolved there first, then on the host.
set -euo pipefail
. "$(dirname "$0")/common.sh"

RUNNER=${1:?usage: initramfs.sh RUNNER-BINARY}
HERE=$(cd "$(dirname "$0")" && pwd)
SYS=$XT_SYSROOT
XENBIN=$SYS/usr/lib/xen-$XT_XENVER/bin
LIBPATH=$SYS/usr/lib/x86_64-linux-gnu:$SYS/lib/x86_64-linux-gnu
# Loaded in this order by /init: xenfs needs xen-privcmd; the block modules serve the block checks, xen-netback
# and tun the net checks.
MODULES="xen-privcmd xenfs xen-evtchn xen-gntdev xen-gntalloc loop xen-blkback xen-blkfront xen-netback tun"
# Only copied for the domU (its network mode, domunet-init.sh); dom0 never loads it.
DOMU_MODULES="xen-netfront"

[ -f "$SYS/.stamp" ] || xt_die "guest packages missing: run scripts/xen/fetch.sh"
mkdir -p "$XT_OUT"

# --- hypervisor and kernel -------------------------------------------------------------------------------
zcat "$SYS/boot/xen-$XT_XENVER-amd64.gz" > "$XT_OUT/xen.elf.tmp" && mv "$XT_OUT/xen.elf.tmp" "$XT_OUT/xen.elf"
KVER=$(ls "$SYS/lib/modules" | sort -V | tail -1)
[ -n "$KVER" ] && [ -f "$SYS/boot/vmlinuz-$KVER" ] || xt_die "no kernel in $SYS/boot"
grep -q '^CONFIG_XEN_DOM0=y' "$SYS/boot/config-$KVER" || xt_die "kernel $KVER cannot be a Xen dom0"
cp -f "$SYS/boot/vmlinuz-$KVER" "$XT_OUT/vmlinuz"

# --- root filesystem ---------------------------------------------------------------------------------------
ROOT=$XT_OUT/rootfs
rm -rf "$ROOT"
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,lib/x86_64-linux-gnu,lib/modules,lib64,proc,sys,dev,run,tmp,root}
mkdir -p "$ROOT"/{etc/xen,var/lib/xenstored,var/lib/xen,var/log/xen,var/lock,opt/bin,opt/domu}
ln -s ../run "$ROOT/var/run"

install -m 0755 "$SYS/bin/busybox" "$ROOT/bin/busybox"
for applet in $("$SYS/bin/busybox" --list); do
    [ -e "$ROOT/bin/$applet" ] || ln -s busybox "$ROOT/bin/$applet"
done

# stage SRC DEST [ROOT]: an executable plus every shared library it loads, all libraries flat in
# /lib/x86_64-linux-gnu (on the guest's default search path) and the loader in /lib64, under ROOT (dom0's).
stage() {
    local src=$1 dst=$2 ROOT=${3:-$ROOT} line name path
    install -D -m 0755 "$src" "$ROOT$dst"
    while read -r line; do
        case "$line" in
            *" => "/*)
                name=${line%% =>*}; path=${line#*=> }; path=${path%% (*}
                [ -e "$ROOT/lib/x86_64-linux-gnu/$name" ] || install -m 0755 "$(readlink -f "$path")" \
                    "$ROOT/lib/x86_64-linux-gnu/$name" ;;
            *"not found"*) xt_die "$src: $line" ;;
            /*)
                path=${line%% (*}
                [ -e "$ROOT$path" ] || install -D -m 0755 "$(readlink -f "$path")" "$ROOT$path" ;;
        esac
    done < <(LD_LIBRARY_PATH=$LIBPATH ldd "$src" 2>/dev/null)
}

for b in xenstored oxenstored xen-init-dom0 xenconsoled; do stage "$XENBIN/$b" "/usr/sbin/$b"; done
stage "$SYS/usr/bin/xenstore" /usr/bin/xenstore
for c in read write rm ls list exists watch chmod; do ln -s xenstore "$ROOT/usr/bin/xenstore-$c"; done
# Xen's libxenvchan peer for the vchan checks (the binary itself: /usr/bin holds only Debian's wrapper).
stage "$XENBIN/vchan-socket-proxy" /usr/bin/vchan-socket-proxy
cp "$SYS/etc/xen/oxenstored.conf" "$ROOT/etc/xen/"
# xl/libxl for the domU check: no xenconsoled, no hotplug scripts (the domU gets no kernel-backed device).
# dom0_mem is fixed on Xen's command line, so xl must not try to balloon dom0 down.
stage "$XENBIN/xl" /usr/sbin/xl
# XT_QDISK=1: QEMU's Xen device model (Debian's qemu-system-xen) where libxl looks for it, with its libraries
# (about 60 MB: only the benchmark boots carry it). The `bench` group gives its guest a qdisk disk.
if [ "${XT_QDISK:-0}" = 1 ]; then
    [ -x "$SYS/usr/libexec/xen-qemu-system-i386" ] || xt_die "no qemu-system-xen in the sysroot (fetch.sh)"
    stage "$SYS/usr/libexec/xen-qemu-system-i386" /usr/libexec/xen-qemu-system-i386
    # libxl passes `-vnc none`, and QEMU 7.2 still loads its default keymap: without it the device model exits
    # ("could not read keymap file: 'en-us'") and libxl's QMP connection is refused.
    install -D -m 0644 "$SYS/usr/share/qemu/keymaps/en-us" "$ROOT/usr/share/qemu/keymaps/en-us"
fi
printf 'autoballoon="off"\nlockfile="/var/lock/xl"\n' > "$ROOT/etc/xen/xl.conf"
strip -o "$XT_OUT/xen-test-runner" "$RUNNER"
stage "$XT_OUT/xen-test-runner" /opt/bin/xen-test-runner
# glibc's checking malloc for XT_HEAP_DEBUG=check (the host's, matching the staged libc.so.6 when they are the same).
if cmp -s "$ROOT/lib/x86_64-linux-gnu/libc.so.6" /lib/x86_64-linux-gnu/libc.so.6 \
    && [ -e /lib/x86_64-linux-gnu/libc_malloc_debug.so.0 ]; then
    install -m 0755 /lib/x86_64-linux-gnu/libc_malloc_debug.so.0 "$ROOT/lib/x86_64-linux-gnu/"
fi

for m in $MODULES $DOMU_MODULES; do
    f=$(find "$SYS/lib/modules/$KVER" -name "$m.ko*" | head -1)
    case "$f" in
        *.ko) cp "$f" "$ROOT/lib/modules/$m.ko" ;;
        *.ko.xz) xz -dc "$f" > "$ROOT/lib/modules/$m.ko" ;;
        *.ko.zst) zstd -qdc "$f" > "$ROOT/lib/modules/$m.ko" ;;
        *) xt_die "kernel module $m not found under $SYS/lib/modules/$KVER" ;;
    esac
done
echo "$MODULES" > "$ROOT/etc/xt-modules"

install -m 0755 "$HERE/guest-init.sh" "$ROOT/init"

# --- the test domU (DomUChecks): the dom0 kernel again, busybox, xen-blkfront, domu-init.sh as /init ----------
DROOT=$XT_OUT/rootfs-domu
rm -rf "$DROOT"
mkdir -p "$DROOT"/{bin,dev,proc,sys,tmp,lib/modules}
install -m 0755 "$SYS/bin/busybox" "$DROOT/bin/busybox"
for applet in $("$SYS/bin/busybox" --list); do
    [ -e "$DROOT/bin/$applet" ] || ln -s busybox "$DROOT/bin/$applet"
done
cp "$ROOT/lib/modules/xen-blkfront.ko" "$DROOT/lib/modules/"
mv "$ROOT/lib/modules/xen-netfront.ko" "$DROOT/lib/modules/"
# The hostile guest (the `hostile` group, hostile-init.sh): the same busybox tree, no block or net frontend, but
# this runner with its libraries and the evtchn and gntalloc modules: it runs as `xen-test-runner hostile-guest`.
HROOT=$XT_OUT/rootfs-hostile
rm -rf "$HROOT"
cp -a "$DROOT" "$HROOT"
rm -f "$HROOT"/lib/modules/*
cp "$ROOT/lib/modules/xen-evtchn.ko" "$ROOT/lib/modules/xen-gntalloc.ko" "$HROOT/lib/modules/"
mkdir -p "$HROOT"/{lib/x86_64-linux-gnu,lib64,opt/bin}
stage "$XT_OUT/xen-test-runner" /opt/bin/xen-test-runner "$HROOT"
install -m 0755 "$HERE/hostile-init.sh" "$HROOT/init"
(cd "$HROOT" && find . | LC_ALL=C sort | "$SYS/bin/busybox" cpio -o -H newc 2>/dev/null) \
    | gzip -1 > "$ROOT/opt/domu/initrd-hostile.img"

install -m 0755 "$HERE/domu-init.sh" "$DROOT/init"
install -m 0755 "$HERE/domunet-init.sh" "$DROOT/domunet-init.sh"
# The benchmark mode (the `bench` group, scripts/xen/bench-init.sh) and its random-read tool, a static C program.
install -m 0755 "$HERE/bench-init.sh" "$DROOT/bench-init.sh"
command -v "${CC:-cc}" >/dev/null || xt_die "no C compiler (${CC:-cc}) for bench-randread.c (make setup installs gcc)"
"${CC:-cc}" -static -O2 -pthread -o "$DROOT/bin/bench-randread" "$HERE/bench-randread.c" \
    || xt_die "cannot build bench-randread.c statically (libc6-dev)"
strip "$DROOT/bin/bench-randread"
(cd "$DROOT" && find . | LC_ALL=C sort | "$SYS/bin/busybox" cpio -o -H newc 2>/dev/null) \
    | gzip -1 > "$ROOT/opt/domu/initrd.img"
cp "$SYS/boot/vmlinuz-$KVER" "$ROOT/opt/domu/vmlinuz"
# Two vCPUs (two blkfront queues) and a 4-page ring (domu-init.sh loads xen-blkfront with
# max_ring_page_order=2): blkfront preallocates its persistent grants, 128 requests x 33 pages per queue, about
# 33 MiB, hence 192 MiB. No disk, no vif: libxl starts no backend of its own; the runner attaches ours. Its
# console is the primary PV console, which libxl sets up for xenconsoled and our ConsoleDaemon serves instead.
cat > "$ROOT/opt/domu/domu.cfg" <<'CFG'
name = "swiftxen-domu"
type = "pv"
kernel = "/opt/domu/vmlinuz"
ramdisk = "/opt/domu/initrd.img"
extra = "console=hvc0 loglevel=4"
memory = 192
vcpus = 2
on_poweroff = "destroy"
on_reboot = "destroy"
on_crash = "preserve"
CFG
# The same guest in its network mode (the `domunet` group, scripts/xen/domunet-init.sh): no disk, no vif in the
# config either; the runner writes two vifs (ours and the kernel's xen-netback) before unpausing it.
sed -e 's/^name = .*/name = "swiftxen-domunet"/' -e 's/^extra = "\(.*\)"/extra = "\1 xt.mode=net"/' \
    "$ROOT/opt/domu/domu.cfg" > "$ROOT/opt/domu/domunet.cfg"
# The hostile guest (the `hostile` group): the domU's config with its own initramfs (two vCPUs, so the guest
# runner's cooperative pool has more than one thread); no disk, no vif either (dom0 writes the vbd it attacks).
sed -e 's/^name = .*/name = "swiftxen-hostile"/' -e 's|^ramdisk = .*|ramdisk = "/opt/domu/initrd-hostile.img"|' \
    "$ROOT/opt/domu/domu.cfg" > "$ROOT/opt/domu/hostile.cfg"
# The benchmark guest (the `bench` group): the domU in its bench mode, more memory (three disks with persistent
# grants preallocated, about 33 MiB each). The runner adds its qdisk disk when QEMU is staged.
sed -e 's/^name = .*/name = "swiftxen-bench"/' -e 's/^extra = "\(.*\)"/extra = "\1 xt.mode=bench"/' \
    -e 's/^memory = .*/memory = 320/' "$ROOT/opt/domu/domu.cfg" > "$ROOT/opt/domu/bench.cfg"
echo "root:x:0:0:root:/root:/bin/sh" > "$ROOT/etc/passwd"
echo "root:x:0:" > "$ROOT/etc/group"

# --- pack ------------------------------------------------------------------------------------------------------
# busybox's cpio writes the newc format the kernel unpacks; no host cpio needed.
(cd "$ROOT" && find . | LC_ALL=C sort | "$SYS/bin/busybox" cpio -o -H newc 2>/dev/null) \
    | gzip -1 > "$XT_OUT/initrd.img.tmp"
mv "$XT_OUT/initrd.img.tmp" "$XT_OUT/initrd.img"
xt_log "initramfs: kernel $KVER, $(du -sh "$ROOT" | cut -f1) staged, initrd $(du -h "$XT_OUT/initrd.img" | cut -f1)"
