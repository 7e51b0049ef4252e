#!/usr/bin/env bash
# Run each fuzz target (fuzz/fuzz_targets/, libFuzzer through cargo-fuzz) for a bounded time.
#
#   scripts/fuzz.sh                        # every target, 30 s each
#   FUZZ_SECONDS=600 scripts/fuzz.sh       # the long run: 10 minutes each
#   FUZZ_JOBS=2 scripts/fuzz.sh jws config # these targets, two at a time
#
# Only the stable toolchain is needed: cargo-fuzz's nightly flags (-Zsanitizer=address and the
# coverage instrumentation) are accepted by stable rustc under RUSTC_BOOTSTRAP=1, set here for
# cargo-fuzz only. Installs cargo-fuzz from crates.io when it is missing.
#
# Each target starts from the committed seeds (fuzz/seeds/<target>/, read only) and keeps what it
# finds in fuzz/corpus/<target>/ (not committed). A crash stops the run with a non-zero exit; its input
# is in fuzz/artifacts/<target>/ and `cargo fuzz run <target> <file>` replays it. Turn each crash into
# a unit test beside the code it broke. Per target, the last libFuzzer status line (executions, exec/s,
# coverage) is printed, and the full log is kept in fuzz/logs/<target>.log.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

SECONDS_EACH=${FUZZ_SECONDS:-30}
JOBS=${FUZZ_JOBS:-1}
RSS_LIMIT_MB=${FUZZ_RSS_LIMIT_MB:-2048}
ALL=(canonical_path session_cookie login_state_cookie claims jws logout_token callback_query return_target config host)
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL[@]}")

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

echo "fuzz.sh: building the targets" >&2
cargo fuzz build
mkdir -p logs

run_one() {
  local target=$1 log="logs/$1.log"
  mkdir -p "corpus/$target" "seeds/$target"
  local start=$(date +%s)
  if cargo fuzz run "$target" "corpus/$target" "seeds/$target" -- \
      -max_total_time="$SECONDS_EACH" -rss_limit_mb="$RSS_LIMIT_MB" -timeout=10 \
      -print_final_stats=1 >"$log" 2>&1; then
    local status=ok
  else
    local status=CRASH
  fi
  local took=$(( $(date +%s) - start ))
  local last runs rate
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  runs=$(awk '/^stat::number_of_executed_units/ {print $2}' "$log")
  rate=$(awk '/^stat::average_exec_per_sec/ {print $2}' "$log")
  printf '%-20s %-5s %5ss %12s execs %8s exec/s | %s\n' \
    "$target" "$status" "$took" "${runs:-?}" "${rate:-?}" "$last"
  [ "$status" = ok ]
}

failed=0
pids=()
for target in "${TARGETS[@]}"; do
  run_one "$target" &
  pids+=($!)
  if [ ${#pids[@]} -ge "$JOBS" ]; then
    wait "${pids[0]}" || failed=1
    pids=("${pids[@]:1}")
  fi
done
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done

if [ "$failed" -ne 0 ]; then
  echo "fuzz.sh: a target crashed; see fuzz/artifacts/ and fuzz/logs/" >&2
  exit 1
fi
echo "fuzz.sh: no crash in ${#TARGETS[@]} target(s), ${SECONDS_EACH}s each" >&2
