#!/bin/sh
# The `bench` group's guest (scripts/xen/domu-init.sh hands over here with xt.mode=bench on the kernel command
# line; see Sources/xen-test-runner/BenchChecks.swift). It loads xen-blkfront (4-page ring, a queue per vCPU)
# and measures the disks dom0 attached, one command at a time typed on its console (served by our
# ConsoleDaemon), answering each with one line "XT-DOMU ID ...":
#   ID disks                  -> "ID xvda=BYTES xvdb=BYTES ..." (every xvd* disk and its size)
#   ID read DISK MIB          -> dd if=/dev/DISK of=/dev/null bs=1M count=MIB iflag=direct: "ID bytes=N seconds=S"
#                                (timed with /proc/uptime: busybox dd prints no rate here)
#   ID write DISK MIB         -> dd if=/dev/zero of=/dev/DISK bs=1M count=MIB oflag=direct conv=fsync: the same
#   ID rand DISK DEPTH SECS   -> bench-randread: 4 KiB random O_DIRECT reads at DEPTH: "ID ios=N seconds=S iops=I"
#   ID console KIB            -> KIB KiB of text lines (yes) written to /dev/hvc0 (this very console) with cat,
#                                timed with /proc/uptime: "ID bytes=N seconds=S" (the write returns once the
#                                backend drained all but the last ring-full into its pty)
# A failed command answers "ID failed WHY".
export PATH=/bin
say() { echo "XT-DOMU $*"; }
fail() { say "error=$*"; while true; do sleep 3600; done; }

say up
insmod /lib/modules/xen-blkfront.ko max_ring_page_order=2 || fail "insmod xen-blkfront"
say ready
# timed_dd ARGS...: busybox dd (Debian's build prints no timing line) timed with /proc/uptime (10 ms steps):
# "bytes=N seconds=S" from the whole 1 MiB records it copied, or "failed WHY".
timed_dd() {
    t0=$(cut -d' ' -f1 /proc/uptime)
    out=$(dd "$@" 2>&1) || { echo "failed $(echo "$out" | tail -1)"; return; }
    t1=$(cut -d' ' -f1 /proc/uptime)
    records=$(echo "$out" | sed -n 's/^\([0-9]*\)+0 records out$/\1/p')
    [ -n "$records" ] || { echo "failed dd said: $(echo "$out" | tr '\n' ' ')"; return; }
    echo "bytes=$((records * 1048576)) seconds=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')"
}
while read -r id verb disk a b; do
    case "$verb" in
        disks)
            out=
            for d in /sys/block/xvd*; do
                [ -e "$d/size" ] && out="$out ${d##*/}=$(($(cat "$d/size") * 512))"
            done
            say "$id${out:- none}" ;;
        read) say "$id $(timed_dd if="/dev/$disk" of=/dev/null bs=1M count="$a" iflag=direct)" ;;
        write) say "$id $(timed_dd if=/dev/zero of="/dev/$disk" bs=1M count="$a" oflag=direct conv=fsync)" ;;
        rand)
            if out=$(/bin/bench-randread "/dev/$disk" "$a" "$b" 2>&1); then say "$id $out"
            else say "$id failed $(echo "$out" | tail -1)"; fi ;;
        console)
            yes 0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ | head -c $((disk * 1024)) > /tmp/payload
            t0=$(cut -d' ' -f1 /proc/uptime)
            if cat /tmp/payload > /dev/hvc0; then
                t1=$(cut -d' ' -f1 /proc/uptime)
                say "$id bytes=$((disk * 1024)) seconds=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')"
            else say "$id failed writing /dev/hvc0"; fi
            rm -f /tmp/payload ;;
        "") ;;
        *) say "$id failed unknown command $verb" ;;
    esac
done
fail "console input ended"
