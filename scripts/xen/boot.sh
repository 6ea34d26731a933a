#!/bin/bash
# boot.sh VARIANT LOG — boot Xen + the dom0 initramfs under QEMU TCG once, with the given xenstored
# (c | ocaml), and classify the outcome from the serial console log. No network (-nic none).
#
# Exit status:  0 runner passed everything   1 runner reported failures
#               2 boot-stage failure: QEMU or the kernel never reached the runner (worth a retry)
#               3 the runner started but never printed its summary (crash or hang: a test failure)
# Timeouts (seconds, environment): XT_BOOT_TIMEOUT (QEMU start -> runner start, default 300),
# XT_RUN_TIMEOUT (runner start -> runner exit, default 1800), XT_HALT_TIMEOUT (runner exit -> QEMU gone, 30).
# XT_ONLY (comma-separated check groups, passed to the runner as xt.only; default: all).
# QEMU is always ended by its PID, never by name.
set -uo pipefail
. "$(dirname "$0")/common.sh"

VARIANT=${1:?usage: boot.sh c|ocaml LOG}
LOG=${2:?usage: boot.sh c|ocaml LOG}
BOOT_TIMEOUT=${XT_BOOT_TIMEOUT:-300}
RUN_TIMEOUT=${XT_RUN_TIMEOUT:-1800}
HALT_TIMEOUT=${XT_HALT_TIMEOUT:-30}
for f in xen.elf vmlinuz initrd.img; do [ -f "$XT_OUT/$f" ] || { xt_log "missing $XT_OUT/$f"; exit 2; }; done
command -v qemu-system-x86_64 >/dev/null || { xt_log "qemu-system-x86_64 missing"; exit 2; }

# Xen: serial console, a fixed-size PV dom0 with XT_DOM0_VCPUS vCPUs (2), no boot-time scrubbing
# of free RAM (slow under emulation), CET off (QEMU's TCG does not emulate it). smap=0: with SMAP on, the PV dom0 kernel faults
# on its first stack access under TCG ("d0v0 Unhandled: vec 14, #PF[0001]", dom0 crashes at once).
XEN_CMDLINE="console=com1 com1=115200,8n1 loglvl=warning guest_loglvl=warning dom0_mem=512M,max:512M"
XEN_CMDLINE+=" dom0_max_vcpus=${XT_DOM0_VCPUS:-2} bootscrub=0 cet=no-shstk,no-ibt smap=0 ${XT_XEN_EXTRA:-}"
# dom0: console on Xen's hvc, little kernel chatter, our knobs for /init.
DOM0_CMDLINE="console=hvc0 earlyprintk=xen loglevel=4 xt.xenstored=$VARIANT xt.timeout=$RUN_TIMEOUT"
# XT_ONLY=console,grants: run only those check groups (for debugging one area; default all).
# Commas separate QEMU's multiboot modules, so the list travels with "+" between groups.
[ -n "${XT_ONLY:-}" ] && DOM0_CMDLINE+=" xt.only=${XT_ONLY//,/+}"
# XT_HEAP_DEBUG=1|check: heap and grant-mapping debugging in the runner (scripts/xen/guest-init.sh).
[ -n "${XT_HEAP_DEBUG:-}" ] && DOM0_CMDLINE+=" xt.heapdebug=$XT_HEAP_DEBUG"
# XT_ASAN=1: the runner was built with AddressSanitizer; /init sets ASAN_OPTIONS.
[ "${XT_ASAN:-0}" = 1 ] && DOM0_CMDLINE+=" xt.asan=1"
[ -n "${XT_CANARY:-}" ] && DOM0_CMDLINE+=" xt.canary=$XT_CANARY"
[ -n "${XT_DOMU_DISK:-}" ] && DOM0_CMDLINE+=" xt.domu.disk=$XT_DOMU_DISK"
[ -n "${XT_DOMU_CONSOLE:-}" ] && DOM0_CMDLINE+=" xt.domu.console=$XT_DOMU_CONSOLE"
# XB_QUICK=1 (make xen-bench's short mode): the bench group's shorter measurements.
[ "${XB_QUICK:-0}" = 1 ] && DOM0_CMDLINE+=" xt.bench.quick=1"

: > "$LOG"
: > "$LOG.qemu"
T0=$(xt_now)
# Multiboot: Xen is the kernel; "vmlinuz cmdline" and the initramfs are its modules.
# The emulated CPU: every feature TCG offers except XSAVE (and with it AVX and every XSAVE-managed state).
# With XSAVE, vector-register state leaks between contexts under Xen PV: memcpy/memset in dom0 and the
# guests write other contexts' bytes (issue 13, Documentation/RealXen.md); XT_QEMU_CPU=max reproduces it.
qemu-system-x86_64 -accel "tcg,thread=${XT_TCG_THREAD:-multi}" -cpu "${XT_QEMU_CPU:-max,-xsave}" -m 1024 -smp 2 \
    -nodefaults -no-user-config -nographic -vga none -nic none -no-reboot -monitor none \
    -kernel "$XT_OUT/xen.elf" -append "$XEN_CMDLINE" \
    -initrd "$XT_OUT/vmlinuz $DOM0_CMDLINE,$XT_OUT/initrd.img" \
    -serial "file:$LOG" </dev/null 2>"$LOG.qemu" &
QPID=$!

stop_qemu() {
    kill -TERM "$QPID" 2>/dev/null || return 0
    for _ in $(seq 50); do kill -0 "$QPID" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$QPID" 2>/dev/null
}
trap 'stop_qemu; exit 2' INT TERM

# Panics leave QEMU paused rather than exiting, so the log is watched for them too.
FATAL='Panic on CPU|Kernel panic - not syncing|\*\*\*\* Reboot|Hardware Dom0 crashed|Hardware Dom0 shutdown'
reason=
started_at=; exited_at=; summary_at=
while kill -0 "$QPID" 2>/dev/null; do
    elapsed=$(xt_since "$T0")
    if [ -z "$started_at" ] && grep -a -q 'XT-STAGE runner-start' "$LOG"; then started_at=$elapsed; fi
    if [ -z "$exited_at" ] && grep -a -q 'XT-STAGE runner-exit' "$LOG"; then exited_at=$elapsed; fi
    # A runner stuck in uninterruptible I/O may print its summary (watchdog) yet never exit.
    if [ -z "$summary_at" ] && grep -a -q -E '[0-9]+ passed, [0-9]+ failed' "$LOG"; then summary_at=$elapsed; fi
    if [ -z "$exited_at" ] && grep -a -q -E "$FATAL" "$LOG"; then
        reason="fatal: $(grep -a -o -m1 -E "$FATAL" "$LOG")"; sleep 1; stop_qemu; break
    fi
    if [ -z "$started_at" ] && awk -v e="$elapsed" -v l="$BOOT_TIMEOUT" 'BEGIN { exit !(e > l) }'; then
        reason="boot timeout: runner not started after ${BOOT_TIMEOUT}s"; stop_qemu; break
    fi
    if [ -n "$started_at" ] && [ -z "$exited_at" ] &&
        awk -v e="$elapsed" -v s="$started_at" -v l="$((RUN_TIMEOUT + 15))" 'BEGIN { exit !(e - s > l) }'; then
        reason="run timeout: runner still running after ${RUN_TIMEOUT}s"; stop_qemu; break
    fi
    done_at=${exited_at:-$summary_at}
    if [ -n "$done_at" ] &&
        awk -v e="$elapsed" -v s="$done_at" -v l="$HALT_TIMEOUT" 'BEGIN { exit !(e - s > l) }'; then
        xt_log "dom0 did not power off ${HALT_TIMEOUT}s after the runner's summary: killing QEMU"; stop_qemu; break
    fi
    sleep 0.5
done
wait "$QPID"; qrc=$?
trap - INT TERM
WALL=$(xt_since "$T0")

# The console is a tty: strip CRs. Runner lines may carry a Xen/console prefix: match anywhere.
tr -d '\r' < "$LOG" > "$LOG.txt"
# The bench group's table (XT-BENCH lines) goes out with the check lines.
grep -a -o -E '(PASS|FAIL) \[[a-z]+\] .*|XT-BENCH .*' "$LOG.txt" || true
summary=$(grep -a -o -E '[0-9]+ passed, [0-9]+ failed' "$LOG.txt" | tail -1)
boot_s=${started_at:-?}
xt_log "xenstored=$VARIANT qemu_exit=$qrc wall=${WALL}s runner_started_at=${boot_s}s log=$LOG"

if ! grep -a -q 'XT-STAGE runner-start' "$LOG.txt"; then
    xt_log "BOOT FAILURE (xenstored=$VARIANT): ${reason:-the runner never started}"
    grep -a -q 'XT-STAGE userland' "$LOG.txt" && xt_log "  the kernel reached /init"
    grep -a -q 'XT-STAGE xenstored-down' "$LOG.txt" && xt_log "  xenstored did not come up"
    xt_log "  last console lines:"; tail -n 15 "$LOG.txt" | sed 's/^/    | /' >&2
    [ -s "$LOG.qemu" ] && { xt_log "  QEMU stderr:"; sed 's/^/    | /' "$LOG.qemu" >&2; }
    exit 2
fi
# A sanitizer report fails the boot whatever the checks said (XT_ASAN=1 runners).
if grep -a -q -E '(ERROR|WARNING): AddressSanitizer' "$LOG.txt"; then
    xt_log "SANITIZER REPORT (xenstored=$VARIANT):"
    grep -a -E -A 40 '(ERROR|WARNING): AddressSanitizer' "$LOG.txt" | head -n 60 | sed 's/^/    | /' >&2
    [ -n "$summary" ] && echo "[$VARIANT] $summary"
    exit 3
fi
if [ -z "$summary" ]; then
    xt_log "RUNNER FAILURE (xenstored=$VARIANT): no summary line (${reason:-runner crashed}); last lines:"
    tail -n 15 "$LOG.txt" | sed 's/^/    | /' >&2
    exit 3
fi
echo "[$VARIANT] $summary"
case "$summary" in
    "0 passed, "*) exit 1 ;;
    *" 0 failed") exit 0 ;;
    *) exit 1 ;;
esac
