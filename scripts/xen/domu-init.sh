#!/bin/sh
# /init of the test domU's initramfs (PID 1 of a small PV guest that dom0's runner starts with `xl create`;
# see Sources/xen-test-runner/DomUChecks.swift). Its console is the primary PV console, served by OUR
# ConsoleBackend in dom0 (no xenconsoled); its disk xvda is served by OUR BlockBack from a file in dom0.
# Everything it reports goes to that console as XT-DOMU lines, which the runner parses:
#   XT-DOMU up                       PID 1 runs
#   XT-DOMU disk size=S md5=M        /dev/xvda appeared: its size in bytes and the md5 of all of it
#   XT-DOMU queues=Q                 blkfront's hardware queues (one per vCPU)
#   XT-BULK N <payload>              N = 0..999, then XT-DOMU bulk-done count=1000 (ring wrap-around)
#   XT-DOMU ready                    waiting for one line of console input (the backend -> guest direction)
#   XT-DOMU echo=LINE                the line it read
#   XT-DOMU wrote                    it copied the first MiB to offset 8 MiB and wrote LINE at 10 MiB, synced
#   XT-DOMU hvc1=sent                it wrote a line to its second console, /dev/hvc1 (served on another pty)
#   XT-DOMU detach-ready             waiting for the runner to detach xvda (it then types "detached")
#   XT-DOMU detached=yes|no          whether /dev/xvda went away
#   XT-DOMU reattached md5=M         after the runner re-attached the vbd (it types "attached"): the disk again
#   XT-DOMU reloaded md5=M           after unbind + rmmod + insmod of xen-blkfront: reconnected, the disk again
#   XT-DOMU done                     every step passed
#   XT-DOMU error=WHY                something failed (the runner fails the check with WHY)
# Then it idles until the runner destroys the domain. With xt.disk=none on its command line (a debugging
# knob) it skips every disk step.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# The network mode (the `domunet` group's guest: xt.mode=net on the kernel command line) is a script of its own.
grep -q 'xt.mode=net' /proc/cmdline && exec /bin/sh /domunet-init.sh
# The benchmark mode (the `bench` group's guest: xt.mode=bench) too.
grep -q 'xt.mode=bench' /proc/cmdline && exec /bin/sh /bench-init.sh
say() { echo "XT-DOMU $*"; }
fail() { say "error=$*"; while true; do sleep 3600; done; }
# The blkfront module with a multi-page ring (4 pages); one queue per vCPU (its default).
load_blkfront() { insmod /lib/modules/xen-blkfront.ko max_ring_page_order=2; }
wait_disk() { # wait_disk SECONDS: until /dev/xvda exists and has a size
    i=0
    until [ -b /dev/xvda ] && [ "$(cat /sys/block/xvda/size 2>/dev/null || echo 0)" != 0 ]; do
        i=$((i + 1)); [ $i -gt $(($1 * 10)) ] && return 1
        sleep 0.1
    done
}
disk_md5() { sum=$(md5sum < /dev/xvda) || return 1; echo "${sum%% *}"; }
bulk() {
    # 1000 numbered lines (about 64 KiB): the console's 2 KiB output ring fills and drains many times.
    i=0
    while [ $i -lt 1000 ]; do
        echo "XT-BULK $i 0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN"
        i=$((i + 1))
    done
    say "bulk-done count=1000"
}

say up
nodisk=; grep -q 'xt.disk=none' /proc/cmdline && nodisk=1
if [ -z "$nodisk" ]; then
    load_blkfront || fail "insmod xen-blkfront"
    wait_disk 60 || fail "no /dev/xvda after 60s"
    size=$(($(cat /sys/block/xvda/size) * 512))
    sum=$(disk_md5) || fail "reading /dev/xvda"
    say "disk size=$size md5=$sum"
    say "queues=$(ls /sys/block/xvda/mq 2>/dev/null | wc -l)"
fi
bulk
say ready
read -t 120 line || fail "no console input within 120s"
say "echo=$line"
if [ -n "$nodisk" ]; then say wrote; while true; do sleep 3600; done; fi
dd if=/dev/xvda of=/dev/xvda bs=65536 count=16 seek=128 conv=notrunc,fsync 2>/dev/null || fail "copy 1 MiB"
printf '%s\n' "$line" | dd of=/dev/xvda bs=512 seek=20480 conv=notrunc,fsync 2>/dev/null || fail "write line"
sync
say wrote

# A second console: device/console/1, which the runner's toolstack created before unpausing us.
i=0
until [ -c /dev/hvc1 ]; do i=$((i + 1)); [ $i -gt 600 ] && fail "no /dev/hvc1 after 60s"; sleep 0.1; done
echo "XT-HVC1 hello through the second console" > /dev/hvc1 || fail "write /dev/hvc1"
say hvc1=sent

# The toolstack detaches xvda while we run, then attaches it again.
say detach-ready
read -t 120 cmd || fail "no detach command within 120s"
[ "$cmd" = detached ] || fail "expected detached, got $cmd"
i=0
while [ -b /dev/xvda ]; do i=$((i + 1)); [ $i -gt 300 ] && break; sleep 0.1; done
[ -b /dev/xvda ] && say detached=no || say detached=yes
read -t 120 cmd || fail "no attach command within 120s"
[ "$cmd" = attached ] || fail "expected attached, got $cmd"
wait_disk 60 || fail "no /dev/xvda after re-attach"
sum=$(disk_md5) || fail "reading /dev/xvda after re-attach"
say "reattached md5=$sum"

# Our own driver goes and comes back: blkfront closes and reconnects to the same backend. Since Linux 5.5
# xenbus holds a reference on a driver's module for every device bound to it (xenbus_dev_probe), so
# `rmmod xen_blkfront` is refused while xvda is bound: unbind it first (blkfront's remove; the frontend goes
# Closed), then rmmod and insmod (the new driver probes the device, still Closed, and connects when the
# backend says Connected).
say "reload=unbind+rmmod+insmod ($(grep xen_blkfront /proc/modules | cut -d' ' -f1,3) bound device)"
# If the reload is not over in 60 s, say where it stands (xenbus state, requests in flight, blocked tasks).
( sleep 60; say "reload-status state=$(cat /sys/bus/xen/devices/vbd-51712/state 2>&1) inflight=$(cat /sys/block/xvda/inflight 2>&1) blocked=$(grep -l '^State:.D' /proc/[0-9]*/status 2>/dev/null | while read -r f; do d=${f%/status}; printf '%s:%s ' "$(cat "$d/comm")" "$(cat "$d/wchan" 2>/dev/null)"; done)" ) &
watch=$!
echo vbd-51712 > /sys/bus/xen/drivers/vbd/unbind || fail "unbind vbd-51712"
i=0
while [ -b /dev/xvda ]; do i=$((i + 1)); [ $i -gt 300 ] && fail "/dev/xvda still present after unbind"; sleep 0.1; done
why=$(rmmod xen_blkfront 2>&1) || fail "rmmod xen_blkfront after unbind: $why"
load_blkfront || fail "insmod xen-blkfront again"
wait_disk 60 || fail "no /dev/xvda after reloading xen-blkfront"
sum=$(disk_md5) || fail "reading /dev/xvda after reload"
kill $watch 2>/dev/null
say "reloaded md5=$sum"
say done
while true; do sleep 3600; done
