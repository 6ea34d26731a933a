#!/bin/bash
# xen-test.sh — the real-Xen tier, end to end (what `make xen-test` runs):
#   fetch Debian packages -> build the static Swift runner -> pack the dom0 initramfs ->
#   boot Xen 4.17 + dom0 under QEMU TCG once per xenstored (C xenstored, then oxenstored) -> summary.
# A boot-stage failure (QEMU or the kernel never reaching the runner) is retried once; test failures are not.
# Exit status 0 only when every boot reached the runner and every check passed.
#
# Environment: XT_VARIANTS (default "c ocaml"), XT_DIR (default .build-xen), the timeouts of boot.sh,
# XT_REPEAT=N (soak: every boot N times), XT_HOG=1 (busy loops beside QEMU), XT_ASAN=1 (an ASan runner).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/common.sh"

T0=$(xt_now)
phase() { # phase NAME CMD...: run one step, time it, stop on failure
    local name=$1 s rc; shift
    s=$(xt_now)
    "$@"; rc=$?
    xt_log "phase $name: $(xt_since "$s")s (exit $rc)"
    [ "$rc" -eq 0 ] || xt_die "phase $name failed"
}

phase fetch timeout 1800 "$HERE/fetch.sh"
RUNNER_FILE=$XT_DIR/runner-path
phase build bash -c "'$HERE/build-runner.sh' > '$RUNNER_FILE'"
phase initramfs timeout 300 "$HERE/initramfs.sh" "$(cat "$RUNNER_FILE")"

# XT_REPEAT=N: the whole set of boots N times (a soak), counting the boots in which every check passed.
# XT_HOG=1: a busy process on every host core beside QEMU for the whole run (what CI's neighbours do).
REPEAT=${XT_REPEAT:-1}
HOG_PIDS=()
if [ "${XT_HOG:-0}" = 1 ]; then
    for _ in $(seq "$(nproc)"); do (while :; do :; done) & HOG_PIDS+=($!); done
    xt_log "CPU hog: ${#HOG_PIDS[@]} busy loop(s) beside QEMU"
fi
stop_hog() { [ ${#HOG_PIDS[@]} -gt 0 ] && kill "${HOG_PIDS[@]}" 2>/dev/null; HOG_PIDS=(); }
trap stop_hog EXIT

# One boot per xenstored, every group (domu last), dom0 with XT_DOM0_VCPUS (2) vCPUs. XT_ONLY picks groups.
PLANS=("all:${XT_ONLY:-all}:${XT_DOM0_VCPUS:-2}")

total_pass=0; total_fail=0; status=0; lines=(); boots=0; clean_boots=0
for round in $(seq "$REPEAT"); do
    [ "$REPEAT" -gt 1 ] && xt_log "round $round of $REPEAT"
    for variant in ${XT_VARIANTS:-c ocaml}; do
      for plan in "${PLANS[@]}"; do
        IFS=: read -r pname pgroups pvcpus <<< "$plan"
        for attempt in 1 2; do
            s=$(xt_now)
            log="$XT_OUT/console-$variant-$pname.log"
            [ "$REPEAT" -gt 1 ] && log="$XT_OUT/console-$variant-$pname-$round.log"
            out=$(XT_ONLY="$pgroups" XT_DOM0_VCPUS="$pvcpus" "$HERE/boot.sh" "$variant" "$log")
            rc=$?
            [ -n "$out" ] && echo "$out"
            xt_log "boot $variant/$pname (dom0 $pvcpus vCPU) attempt $attempt: exit $rc in $(xt_since "$s")s"
            [ "$rc" -eq 2 ] && [ "$attempt" -eq 1 ] && { xt_log "boot-stage failure: retrying once"; continue; }
            break
        done
        boots=$((boots + 1))
        summary=$(echo "$out" | grep -o -E '[0-9]+ passed, [0-9]+ failed' | tail -1)
        case "$rc" in
            0|1) p=${summary%% passed*}; f=${summary#*, }; f=${f%% failed*}
                 total_pass=$((total_pass + p)); total_fail=$((total_fail + f))
                 lines+=("$variant/$pname#$round: $summary") ;;
            2) lines+=("$variant/$pname#$round: BOOT FAILURE (twice)") ;;
            *) lines+=("$variant/$pname#$round: RUNNER CRASHED OR HUNG${summary:+ after $summary}") ;;
        esac
        if [ "$rc" -eq 0 ]; then clean_boots=$((clean_boots + 1)); else status=1; fi
      done
    done
done
stop_hog

xt_log "xen-test finished in $(xt_since "$T0")s: ${lines[*]/%/;}"
[ "$REPEAT" -gt 1 ] && echo "xen-test: $clean_boots of $boots boots passed every check"
echo "xen-test: $total_pass passed, $total_fail failed"
exit $status
