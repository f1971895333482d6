#!/usr/bin/env bash
# Promise 1 soak: runs the real-process stories of cli/tests/promise1.rs (agent paused, leader
# paused, node fenced briefly, two failovers in a row, drain, SIGTERM) and cli/tests/netns.rs
# (a flapping leader link, in network namespaces; skipped where they cannot be made) N times,
# release build, and stops at the first failure, leaving its output in soak-<run>.log.
#
#   scripts/soak-promise1.sh            # 20 rounds (about 10 minutes on 2 cores)
#   scripts/soak-promise1.sh 200        # overnight-sized
#   NINES_SOAK_PROFILE=debug scripts/soak-promise1.sh 2   # what CI runs (debug build)
#
# Each round checks, from the counter components' own timestamped logs, that no two components
# ever believed themselves active for the SI at once.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-20}"
profile="${NINES_SOAK_PROFILE:-release}"
flags=()
[ "$profile" = release ] && flags+=(--release)
case "$rounds" in
  ''|*[!0-9]*) echo "usage: $0 [ROUNDS]   (ROUNDS: a whole number; got '$rounds')" >&2; exit 2 ;;
esac
echo "soak: building the $profile test binaries"
cargo test "${flags[@]}" -p nines-cli --test promise1 --test netns --no-run
passed=0
for ((i = 1; i <= rounds; i++)); do
  started=$(date +%s)
  if cargo test "${flags[@]}" -q -p nines-cli --test promise1 --test netns >"soak-$i.log" 2>&1; then
    passed=$((passed + 1))
    rm -f "soak-$i.log"
    echo "soak: round $i/$rounds ok ($(( $(date +%s) - started )) s)"
  else
    echo "soak: round $i/$rounds FAILED; its output is in soak-$i.log"
    echo "soak: $passed passed, 1 failed"
    exit 1
  fi
done
echo "soak: $passed passed, 0 failed"
