#!/bin/sh
# The network mode of the test domU (xt.mode=net on its kernel command line: domu-init.sh hands over to this
# script; see Sources/xen-test-runner/DomUNetChecks.swift). Two vifs, told apart by their MACs: vif 0, served by
# OUR NetBack in dom0 (bridged to a TAP interface holding 10.97.0.1), and vif 1, served by dom0's kernel
# xen-netback (vifN.1 holding 10.96.0.1). Reports go to the console as XT-DOMU lines:
#   XT-DOMU up                               PID 1 runs
#   XT-DOMU data md5=M                       /tmp/up.bin (16 MiB from /dev/urandom) is ready
#   XT-DOMU ifaces ours=IF kernel=IF queues=Q  xen-netfront is loaded and both interfaces have their address
#   XT-DOMU error=WHY                        something failed (the runner fails the check with WHY)
# Then it reads commands typed on the console, one per line, "ID VERB ARGS", and answers "XT-DOMU ID ...":
#   ID ping ADDR         -> ID ping=R/5         five pings, R answered (each within 10 s)
#   ID send ADDR PORT    -> ID sent rc=N cs=C   /tmp/up.bin to ADDR:PORT with nc (C centiseconds)
#   ID recv ADDR PORT    -> ID received md5=M bytes=B cs=C   what ADDR:PORT sends, through nc
#   ID reload            -> ID reloaded how=H ours=IF kernel=IF   rmmod xen-netfront (H: rmmod, or unbind+rmmod),
#                           insmod it again, addresses again
# Only addresses inside this VM, on interfaces the tier creates; IPv6 off.
export PATH=/bin
say() { echo "XT-DOMU $*"; }
fail() { say "error=$*"; while true; do sleep 3600; done; }
OURS_MAC=00:16:3e:5a:20:00
KERNEL_MAC=00:16:3e:5a:20:01
centis() { t=$(cut -d' ' -f1 /proc/uptime); echo "${t%.*}${t#*.}"; }
# iface MAC: the interface with that address.
iface() {
    for d in /sys/class/net/*; do
        [ "$(cat "$d/address" 2>/dev/null)" = "$1" ] && { echo "${d##*/}"; return 0; }
    done
    return 1
}
# configure MAC ADDRESS: waits up to 60 s for the interface, gives it ADDRESS/24, brings it up; prints its name.
configure() {
    i=0
    until n=$(iface "$1"); do i=$((i + 1)); [ $i -gt 600 ] && return 1; sleep 0.1; done
    ip addr add "$2/24" dev "$n" && ip link set "$n" up && echo "$n"
}
load() {
    insmod /lib/modules/xen-netfront.ko || return 1
    ours=$(configure $OURS_MAC 10.97.0.2) || return 1
    kernel=$(configure $KERNEL_MAC 10.96.0.2) || return 1
}

say up
sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 2>/dev/null
dd if=/dev/urandom of=/tmp/up.bin bs=1048576 count=16 2>/dev/null || fail "writing /tmp/up.bin"
sum=$(md5sum < /tmp/up.bin); say "data md5=${sum%% *}"
load || fail "xen-netfront: no interface with $OURS_MAC or $KERNEL_MAC (or no address)"
say "ifaces ours=$ours kernel=$kernel queues=$(ls /sys/class/net/"$ours"/queues | grep -c tx-)"

while read -r id verb a b; do
    case "$verb" in
        ping)
            # One ping per call: after its last echo busybox ping waits only about two round trips (at least
            # 1 s) for the reply, too short under emulation; alone, each gets -W 10 s.
            got=0
            for _ in 1 2 3 4 5; do ping -c 1 -W 10 "$a" >/dev/null 2>&1 && got=$((got + 1)); done
            say "$id ping=$got/5" ;;
        send)
            t0=$(centis); nc "$a" "$b" < /tmp/up.bin; rc=$?
            say "$id sent rc=$rc cs=$(($(centis) - t0))" ;;
        recv)
            rm -f /tmp/down.bin
            t0=$(centis); nc "$a" "$b" < /dev/null > /tmp/down.bin; t1=$(centis)
            sum=$(md5sum < /tmp/down.bin)
            say "$id received md5=${sum%% *} bytes=$(wc -c < /tmp/down.bin) cs=$((t1 - t0))"
            rm -f /tmp/down.bin ;;
        reload)
            # Linux 6.1's xenbus takes a reference on the driver's module for every device it binds
            # (xenbus_dev_probe), so rmmod fails (EAGAIN) while a vif is bound: if it does, unbind every vif
            # first (the driver's remove, as rmmod would run it: the frontends close), then rmmod.
            how=rmmod
            if ! rmmod xen_netfront 2>/dev/null; then
                how="unbind+rmmod"
                for d in /sys/bus/xen/drivers/vif/vif-*; do
                    echo "${d##*/}" > /sys/bus/xen/drivers/vif/unbind || fail "unbind ${d##*/}"
                done
                rmmod xen_netfront || fail "rmmod xen_netfront after unbinding ($(grep xen_netfront /proc/modules))"
            fi
            i=0
            while iface $OURS_MAC >/dev/null; do
                i=$((i + 1)); [ $i -gt 50 ] && fail "$OURS_MAC still present after rmmod"; sleep 0.1
            done
            load || fail "xen-netfront again: no interface or no address"
            say "$id reloaded how=$how ours=$ours kernel=$kernel" ;;
        *) say "$id unknown=$verb" ;;
    esac
done
fail "console input ended"
