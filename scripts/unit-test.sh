#!/usr/bin/env bash
# `make unit-test`'s run: `swift test --skip-build` with a deadline. The suite takes about a minute; a test that
# hangs must fail the run within UNIT_TEST_TIMEOUT seconds (default 900) instead of eating CI's 90 minutes,
# and say where it hung: the tests that started and never finished, and a backtrace of every thread of the
# test process (gdb). Nothing is retried: a hang is a failure.
set -uo pipefail
SWIFT=${SWIFT:-swift}
LIMIT=${UNIT_TEST_TIMEOUT:-900}
log=$(mktemp -t swiftxen-unit-test.XXXXXX)
trap 'rm -f "$log"' EXIT

# A session of its own, so the whole tree (swift test and the test process it starts) can be stopped.
# shellcheck disable=SC2086
setsid $SWIFT test ${SWIFT_FLAGS:-} --skip-build > >(tee "$log") 2>&1 &
runner=$!
deadline=$((SECONDS + LIMIT))
while kill -0 "$runner" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 2; done

if ! kill -0 "$runner" 2>/dev/null; then
  wait "$runner"
  exit $?
fi

echo
echo "unit-test: the unit tests did not finish within ${LIMIT} s: a hang. Tests started and not finished:"
started=$(sed -n 's/^◇ Test \(.*\) started\.$/\1/p' "$log" | sort -u)
finished=$(sed -n -E 's/^[✔✘➜] Test (.*) (passed|failed|skipped)( after.*|:.*|\.)?$/\1/p' "$log" \
  | sed -E 's/ with [0-9]+ test cases?$//' | sort -u)
comm -23 <(echo "$started") <(echo "$finished") | sed 's/^/  /'
for pid in $(pgrep -s "$runner" -f 'PackageTests.xctest'); do
  echo "unit-test: every thread of the test process $pid:"
  if command -v gdb >/dev/null; then
    gdb -p "$pid" -batch -ex 'thread apply all bt' 2>&1 | grep -E '^(Thread|#)' \
      | { $SWIFT demangle --simplified 2>/dev/null || cat; } | cut -c1-240
  else
    echo "  (gdb missing)"
  fi
done
# swift test starts the test process in a process group of its own: stop everything in the session.
pkill -KILL -s "$runner" 2>/dev/null
wait "$runner" 2>/dev/null
exit 124
