#!/bin/sh
# /init of the test domU's initramfs (PID 1 of a small PV guest that dom0's runner starts with `xl create`;
# see Sources/xen-test-runner/DomUChecks.swift). Its console is the primary PV console, served by OUR
# ConsoleBackend in dom0 (no xenconsoled); its disk xvda is served by OUR BlockBack from a file in dom0.
# Everything it reports goes to that console as XT-DOMU lines, which the runner parses:
#   XT-DOMU up                       PID 1 runs
#   XT-DOMU disk size=S md5=M        /dev/xvda appeared: its size in bytes and the md5 of all of it
#   XT-BULK N <payload>              N = 0..999, then XT-DOMU bulk-done count=1000 (ring wrap-around)
#   XT-DOMU ready                    waiting for one line of console input (the backend -> guest direction)
#   XT-DOMU echo=LINE                the line it read
#   XT-DOMU wrote                    it copied the first MiB to offset 8 MiB and wrote LINE at 10 MiB, synced
#   XT-DOMU error=WHY                something failed (the runner fails the check with WHY)
# Then it idles until the runner destroys the domain.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
say() { echo "XT-DOMU $*"; }
fail() { say "error=$*"; while true; do sleep 3600; done; }

say up
if grep -q 'xt.disk=none' /proc/cmdline; then
    # Debugging knob (XT_DOMU_DISK=none): no vbd; the console part only.
    i=0
    while [ $i -lt 1000 ]; do
        echo "XT-BULK $i 0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN"
        i=$((i + 1))
    done
    say "bulk-done count=1000"
    say ready
    read -t 120 line || fail "no console input within 120s"
    say "echo=$line"
    say wrote
    while true; do sleep 3600; done
fi
# Defaults: one queue (one vCPU), a one-page ring. A 16-page ring makes blkfront preallocate its
# persistent-grant pages for 512 requests x 32 segments: out of memory in this 96 MiB guest.
insmod /lib/modules/xen-blkfront.ko || fail "insmod xen-blkfront"
i=0
until [ -b /dev/xvda ] && [ "$(cat /sys/block/xvda/size 2>/dev/null || echo 0)" != 0 ]; do
    i=$((i + 1)); [ $i -gt 600 ] && fail "no /dev/xvda after 60s"
    sleep 0.1
done
size=$(($(cat /sys/block/xvda/size) * 512))
sum=$(md5sum < /dev/xvda) || fail "reading /dev/xvda"
say "disk size=$size md5=${sum%% *}"
# 1000 numbered lines (about 64 KiB): the console's 2 KiB output ring fills and drains many times.
i=0
while [ $i -lt 1000 ]; do
    echo "XT-BULK $i 0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN"
    i=$((i + 1))
done
say "bulk-done count=1000"

say ready
read -t 120 line || fail "no console input within 120s"
say "echo=$line"
dd if=/dev/xvda of=/dev/xvda bs=65536 count=16 seek=128 conv=notrunc,fsync 2>/dev/null || fail "copy 1 MiB"
printf '%s\n' "$line" | dd of=/dev/xvda bs=512 seek=20480 conv=notrunc,fsync 2>/dev/null || fail "write line"
sync
say wrote
while true; do sleep 3600; done
