#!/bin/sh
# /init of the dom0 initramfs (PID 1): bring up the Xen dom0 userland, run the Swift test runner once,
# power off. The host harness (boot.sh) reads the console for the XT-STAGE markers:
#   XT-STAGE userland      PID 1 runs (the kernel booted)
#   XT-STAGE runner-start  xenstored is up, the runner starts: from here on failures are test failures
#   XT-STAGE runner-exit   the runner ended, with its exit status
# Kernel command-line knobs: xt.xenstored=c|ocaml, xt.timeout=SECONDS (runner limit), xt.only=GROUPS,
# xt.heapdebug=1|check (see below).
export PATH=/sbin:/bin:/usr/sbin:/usr/bin:/opt/bin
export HOME=/root

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /run/xenstored /run/xen

stage() { echo "XT-STAGE $* uptime=$(cut -d' ' -f1 /proc/uptime)"; }
arg() { # arg NAME DEFAULT: the value of NAME= on the kernel command line
    v=$(tr ' ' '\n' < /proc/cmdline | sed -n "s/^$1=//p" | tail -1)
    echo "${v:-$2}"
}
halt() { sync; poweroff -f; sleep 5; reboot -f; }

stage userland kernel=$(uname -r)
for m in $(cat /etc/xt-modules); do
    insmod /lib/modules/$m.ko || echo "XT-NOTE insmod $m failed"
done
mount -t xenfs xenfs /proc/xen || echo "XT-NOTE mount xenfs failed"
stage modules-loaded

case "$(arg xt.xenstored c)" in
    ocaml) XS=oxenstored ;;
    *) XS=xenstored ;;
esac
/usr/sbin/$XS --pid-file /run/xen/xenstored.pid
i=0
until xenstore-read / >/dev/null 2>&1; do
    i=$((i + 1))
    if [ $i -gt 300 ]; then stage xenstored-down variant=$XS; halt; fi
    sleep 0.1
done
stage xenstored-up variant=$XS
# What xencommons does at boot: name domain 0 and fill /local/domain/0.
xen-init-dom0 >/dev/null 2>&1 || echo "XT-NOTE xen-init-dom0 failed"

# A scratch disk on a loop device for the block checks (xen-blkback serves it).
dd if=/dev/zero of=/tmp/disk.img bs=1M count=16 2>/dev/null && losetup /dev/loop0 /tmp/disk.img \
    || echo "XT-NOTE loop device setup failed"

# Debugging knobs for the domU group (XT_DOMU_DISK=none, XT_DOMU_CONSOLE=xenconsoled on the host).
DOMU_KNOBS="XT_DOMU_DISK=$(arg xt.domu.disk ours) XT_DOMU_CONSOLE=$(arg xt.domu.console ours)"
[ -n "$(arg xt.canary "")" ] && DOMU_KNOBS="$DOMU_KNOBS XT_CANARY=$(arg xt.canary "")"
# xt.bench.quick=1 (XB_QUICK=1 on the host): the bench group's short mode.
DOMU_KNOBS="$DOMU_KNOBS XB_QUICK=$(arg xt.bench.quick 0)"
if [ "$(arg xt.domu.console ours)" = xenconsoled ]; then
    /usr/sbin/xenconsoled --pid-file=/run/xen/xenconsoled.pid || echo "XT-NOTE xenconsoled failed"
fi
stage runner-start variant=$XS
# xt.heapdebug=1 (XT_HEAP_DEBUG=1 on the host): the runner logs every grant map/unmap (XT-GNT) and fences each
# unmapped range PROT_NONE so a late access faults where it happens; glibc fills freed memory with 0xa5.
# xt.heapdebug=check: also glibc's checking malloc (libc_malloc_debug, MALLOC_CHECK_=3; one arena only).
case "$(arg xt.heapdebug "")" in
    1) HEAPDEBUG="XT_GNT_GUARD=1 MALLOC_PERTURB_=165" ;;
    check) HEAPDEBUG="XT_GNT_GUARD=1 MALLOC_PERTURB_=165 MALLOC_CHECK_=3 LD_PRELOAD=/lib/x86_64-linux-gnu/libc_malloc_debug.so.0" ;;
    *) HEAPDEBUG="" ;;
esac
# xt.asan=1 (XT_ASAN=1 on the host): the runner is an AddressSanitizer build. Reports go to the console
# unsymbolised (binary+offset: the host resolves them with addr2line); the first report ends the runner.
if [ "$(arg xt.asan 0)" = 1 ]; then
    HEAPDEBUG="$HEAPDEBUG XT_ASAN=1 ASAN_OPTIONS=symbolize=0:detect_leaks=0:halt_on_error=1:print_summary=1"
fi
# shellcheck disable=SC2086 # HEAPDEBUG is a list of NAME=VALUE words
env $HEAPDEBUG $DOMU_KNOBS XT_XENSTORED=$XS XT_ONLY=$(arg xt.only "") timeout -s KILL "$(arg xt.timeout 240)" /opt/bin/xen-test-runner
stage runner-exit rc=$?
halt
