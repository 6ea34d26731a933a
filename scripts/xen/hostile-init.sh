#!/bin/sh
# /init of the hostile guest's initramfs (the `hostile` group: Sources/xen-test-runner/HostileChecks.swift).
# A PV domU that runs dom0's own test runner as `xen-test-runner hostile-guest`: a frontend gone bad, driven by
# commands dom0 types on its console (served by our ConsoleDaemon) and answering with XT-DOMU lines:
#   XT-DOMU up                 PID 1 runs
#   XT-DOMU ready              the runner opened the xenbus device, gntalloc and evtchn; it reads commands
#   XT-DOMU ID ...             its answer to command ID (see HostileGuest.swift)
#   XT-DOMU error=WHY          something failed (the runner fails the check with WHY)
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
say() { echo "XT-DOMU $*"; }
fail() { say "error=$*"; while true; do sleep 3600; done; }

say up
for m in xen-evtchn xen-gntalloc; do insmod /lib/modules/$m.ko || fail "insmod $m"; done
i=0
until [ -c /dev/xen/evtchn ] && [ -c /dev/xen/gntalloc ] && [ -c /dev/xen/xenbus ]; do
    i=$((i + 1)); [ $i -gt 100 ] && fail "no /dev/xen/evtchn, gntalloc or xenbus ($(ls /dev/xen 2>&1))"
    sleep 0.1
done
# Devices dom0 adds later (extra consoles whose frontend is the runner, the vbd it attacks) stay unbound: the
# kernel's own console frontend must not claim them.
echo 0 > /sys/bus/xen/drivers_autoprobe || fail "xenbus autoprobe cannot be turned off"
/opt/bin/xen-test-runner hostile-guest
fail "xen-test-runner hostile-guest exited with status $?"
