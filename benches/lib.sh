# Shell helpers shared by the scripts under benches/, sourced after `cd` to the repository root.
# The script sets SCRIPT (its name, for log lines) before sourcing, and WORK (its temporary
# directory) and PIDS (the processes it starts, an array) before it starts anything.
# shellcheck shell=bash

log() { echo "$SCRIPT: $*" >&2; }
die() { log "$*"; exit 1; }

# Stop every process in PIDS and remove WORK, unless KEEP_WORK=1 keeps it for a look.
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${KEEP_WORK:-0}" = 1 ]; then log "configurations and logs kept in $WORK"; else rm -rf "$WORK"; fi
}

# A port of 127.0.0.1 that nothing listens on or holds in any state now.
free_port() {
  local port
  for _ in $(seq 1 200); do
    port=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      if ! grep -q "$(printf ':%04X ' "$port")" /proc/net/tcp 2>/dev/null; then echo "$port"; return; fi
    fi
  done
  die "no free port found"
}

# Wait (at most ~10 s) until `curl URL` answers with status $2.
wait_status() {
  local url=$1 want=$2 got
  for _ in $(seq 1 100); do
    got=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)
    [ "$got" = "$want" ] && return 0
    sleep 0.1
  done
  die "$url did not answer $want (last: $got)"
}
