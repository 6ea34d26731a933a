#!/usr/bin/env bash
# `make unit-test`'s run: the built unit tests (what `swift test --skip-build` runs) with a deadline. The suite
# takes about a minute; a test that hangs must fail the run within UNIT_TEST_TIMEOUT seconds (default 900)
# instead of eating CI's 90 minutes, and say where it hung: the tests that started and never finished, and a
# backtrace of every thread of the test process (gdb). Nothing is retried: a hang is a failure.
set -uo pipefail
SWIFT=${SWIFT:-swift}
LIMIT=${UNIT_TEST_TIMEOUT:-900}
log=$(mktemp -t swiftxen-unit-test.XXXXXX)
trap 'rm -f "$log"' EXIT

# The test binary is run directly, not through `swift test`: SwiftPM relays the test process's output through
# a buffer that is not flushed when the process hangs, so a CI log would end long before the hang. The package
# has Swift Testing tests only (no XCTest cases). A session of its own, so everything it starts can be stopped.
# UNIT_TEST_FILTER passes --filter (a regular expression over test names).
# shellcheck disable=SC2086
bin=$($SWIFT build ${SWIFT_FLAGS:-} --show-bin-path)
tests=$(ls -d "$bin"/*PackageTests.xctest)
NO_COLOR=1 setsid "$tests" --testing-library swift-testing ${UNIT_TEST_FILTER:+--filter "$UNIT_TEST_FILTER"} \
  > >(tee "$log") 2>&1 &
runner=$!
deadline=$((SECONDS + LIMIT))
while kill -0 "$runner" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 2; done

# Servers a test started (nbdkit, qemu-nbd, ...) inherit the test process's output, and a child of a Dispatch
# thread inherits a mask that blocks SIGTERM, so nbdkit's --exit-with-parent cannot fire: one left behind
# (a crash, a test that never stopped it) would hold the output pipe open for ever. Whatever is still in the
# session when the test process ends is named, stopped, and fails the run.
stop_leftovers() {
  local left
  left=$(pgrep -s "$runner" 2>/dev/null | grep -vx "$runner")
  [ -z "$left" ] && return 0
  echo "unit-test: processes the tests left running:"
  for pid in $left; do echo "  $pid $(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | cut -c1-200)"; done
  pkill -KILL -s "$runner" 2>/dev/null
  return 1
}

if ! kill -0 "$runner" 2>/dev/null; then
  wait "$runner"
  status=$?
  stop_leftovers || { [ $status -eq 0 ] && status=1; }
  exit $status
fi

echo
echo "unit-test: the unit tests did not finish within ${LIMIT} s: a hang. Tests started and not finished:"
plain=$(sed 's/\x1b\[[0-9;]*m//g' "$log")
started=$(sed -n 's/^◇ Test \(.*\) started\.$/\1/p' <<<"$plain" | sort -u)
finished=$(sed -n -E 's/^[✔✘➜] Test (.*) (passed|failed|skipped)( after.*|:.*|\.)?$/\1/p' <<<"$plain" \
  | sed -E 's/ with [0-9]+ test cases?$//' | sort -u)
comm -23 <(echo "$started") <(echo "$finished") | sed 's/^/  /'
for pid in $(pgrep -s "$runner" -f 'PackageTests.xctest'); do  # the process itself
  echo "unit-test: every thread of the test process $pid:"
  if command -v gdb >/dev/null; then
    gdb -p "$pid" -batch -ex 'thread apply all bt' 2>&1 | grep -E '^(Thread|#)' \
      | { $SWIFT demangle --simplified 2>/dev/null || cat; } | cut -c1-240
  else
    echo "  (gdb missing)"
  fi
done
kill -KILL "$runner" 2>/dev/null
stop_leftovers
wait "$runner" 2>/dev/null
exit 124
