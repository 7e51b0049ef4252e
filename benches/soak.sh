#!/usr/bin/env bash
# Soak: real traffic and hostile connections at once, for a fixed time.
#
#   benches/soak.sh                          # 60 s: 1000 keep-alive connections, 2000 silent, 200 slowloris
#   DURATION=30 CONNS=400 SILENT=500 benches/soak.sh
#
# portcullis runs in front of an nginx upstream (`return 200`), with the development provider for a real
# login. For DURATION seconds, at the same time:
# - wrk keeps CONNS keep-alive connections busy, half on a public route (/public/) and half on an
#   authenticated one, every request carrying the session cookie (checked on every request);
# - benches/soak_attack.py holds SILENT connections that never send a byte and SLOWLORIS connections
#   that send one more header line every DRIP seconds and never end their head, opening a new one
#   whenever the gateway closes one.
# It reports wrk's errors and non-2xx answers, requests per second, the gateway's peak RSS, its open
# file descriptors before, during (peak) and after (waiting, at most AFTER_LIMIT seconds, for them to
# come back to the baseline: idle upstream connections stay in the pool for up to 90 s), and how
# quickly the hostile connections were closed. Exits non-zero on any error or when the descriptors
# do not come back. Servers on CPU $SERVER_CPU, clients on CPU $CLIENT_CPU; everything on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-60}
CONNS=${CONNS:-1000}
SILENT=${SILENT:-2000}
SLOWLORIS=${SLOWLORIS:-200}
DRIP=${DRIP:-2}
HEADER_READ_TIMEOUT=${HEADER_READ_TIMEOUT:-10s}
AFTER_LIMIT=${AFTER_LIMIT:-150}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
PORTCULLIS=${PORTCULLIS:-target/release/portcullis}
HELPER=${HELPER:-target/release/examples/bench_login}

SCRIPT=soak.sh
# shellcheck source=benches/lib.sh
source benches/lib.sh

if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
  log "installing nginx and wrk"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx wrk >&2
fi
command -v python3 >/dev/null || die "python3 is needed for the hostile connections"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "building (release)"
  cargo build --release --locked --bin portcullis --example bench_login >&2
fi
# Room for the client side of every connection in this shell's children (wrk, the attack helper).
ulimit -n "$(ulimit -Hn)"

WORK=$(mktemp -d /tmp/portcullis-soak.XXXXXX)
chmod 755 "$WORK"
PIDS=()
trap cleanup EXIT
trap 'exit 130' INT TERM

fds() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
kb() { awk -v key="$2:" '$1 == key {print $2}' "/proc/$1/status"; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

UP_PORT=$(free_port); GW_PORT=$(free_port); PROV_PORT=$(free_port)
cat >"$WORK/upstream.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/upstream.pid;
error_log $WORK/upstream-error.log warn;
events { worker_connections 8192; }
worker_rlimit_nofile 16384;
http {
  access_log off;
  client_body_temp_path $WORK/body;
  proxy_temp_path $WORK/proxy;
  fastcgi_temp_path $WORK/fastcgi;
  uwsgi_temp_path $WORK/uwsgi;
  scgi_temp_path $WORK/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  server {
    listen 127.0.0.1:$UP_PORT backlog=4096;
    default_type text/plain;
    location / { return 200 'portcullis soak: a small answer from the upstream\n'; }
  }
}
EOF
CLIENT_ID=portcullis-soak
CLIENT_SECRET=soak-secret
cat >"$WORK/gateway.toml" <<EOF
[server]
listen = "127.0.0.1:$GW_PORT"
public_url = "http://127.0.0.1:$GW_PORT"
header_read_timeout = "$HEADER_READ_TIMEOUT"
[upstream]
url = "http://127.0.0.1:$UP_PORT"
[oidc]
issuer = "http://127.0.0.1:$PROV_PORT"
client_id = "$CLIENT_ID"
client_secret = "$CLIENT_SECRET"
[session]
secret = "$("$PORTCULLIS" secret)"
[[routes]]
path = "^/public/"
policy = "public"
[log]
level = "info"
EOF

log "upstream :$UP_PORT, provider :$PROV_PORT, portcullis :$GW_PORT"
taskset -c "$SERVER_CPU" "$NGINX" -e "$WORK/upstream-error.log" -p "$WORK" -c "$WORK/upstream.conf" 2>>"$WORK/nginx.log" &
PIDS+=($!)
mkfifo "$WORK/provider.in"
taskset -c "$CLIENT_CPU" "$HELPER" provider "$PROV_PORT" "http://127.0.0.1:$GW_PORT/oauth2/callback" \
  "$CLIENT_ID" "$CLIENT_SECRET" <"$WORK/provider.in" >"$WORK/provider.log" 2>&1 &
PIDS+=($!)
exec 7>"$WORK/provider.in"
taskset -c "$SERVER_CPU" "$PORTCULLIS" --config "$WORK/gateway.toml" 2>"$WORK/gateway.log" &
GW_PID=$!; PIDS+=("$GW_PID")
wait_status "http://127.0.0.1:$UP_PORT/" 200
wait_status "http://127.0.0.1:$GW_PORT/readyz" 200

log "logging in"
taskset -c "$CLIENT_CPU" "$HELPER" login "http://127.0.0.1:$GW_PORT" /private 1 1 30 >"$WORK/login.out"
COOKIE=$(sed -n 's/^cookie=//p' "$WORK/login.out")
[ -n "$COOKIE" ] || die "no session cookie from the login"
status=$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $COOKIE" "http://127.0.0.1:$GW_PORT/private")
[ "$status" = 200 ] || die "the session cookie does not authenticate (HTTP $status)"
status=$(curl -s -o /dev/null -w '%{http_code}' -H 'Accept: application/json' "http://127.0.0.1:$GW_PORT/private")
[ "$status" = 401 ] || die "the authenticated route answers $status without a session"
sleep 1
FD_BEFORE=$(fds "$GW_PID")
RSS_BEFORE=$(kb "$GW_PID" VmRSS)
MAX_CONNS=$(sed 's/\x1b\[[0-9;]*m//g' "$WORK/gateway.log" | grep -o 'max_connections=[0-9]*' | head -1 | cut -d= -f2 || true)
log "before: $FD_BEFORE open files, RSS $(mib "$RSS_BEFORE") MiB, max_connections ${MAX_CONNS:-?}"

# --- the soak --------------------------------------------------------------------------------------
HALF=$((CONNS / 2))
log "${DURATION}s: wrk $HALF public + $((CONNS - HALF)) authenticated keep-alive connections, $SILENT silent, $SLOWLORIS slowloris"
taskset -c "$CLIENT_CPU" python3 benches/soak_attack.py 127.0.0.1 "$GW_PORT" --silent "$SILENT" \
  --slowloris "$SLOWLORIS" --seconds "$DURATION" --drip "$DRIP" >"$WORK/attack.out" 2>"$WORK/attack.err" &
ATTACK=$!; PIDS+=("$ATTACK")
sleep 2 # let the hostile connections build up first
WRK_SECONDS=$((DURATION - 4))
taskset -c "$CLIENT_CPU" wrk -t1 -c"$HALF" -d"${WRK_SECONDS}s" --timeout 10s \
  "http://127.0.0.1:$GW_PORT/public/page" >"$WORK/wrk-public.out" 2>&1 &
WRK1=$!; PIDS+=("$WRK1")
taskset -c "$CLIENT_CPU" wrk -t1 -c"$((CONNS - HALF))" -d"${WRK_SECONDS}s" --timeout 10s \
  -H "Cookie: $COOKIE" -H 'Accept: application/json' \
  "http://127.0.0.1:$GW_PORT/private/page" >"$WORK/wrk-auth.out" 2>&1 &
WRK2=$!; PIDS+=("$WRK2")

FD_PEAK=0
while kill -0 "$WRK1" 2>/dev/null || kill -0 "$WRK2" 2>/dev/null || kill -0 "$ATTACK" 2>/dev/null; do
  n=$(fds "$GW_PID"); [ "$n" -gt "$FD_PEAK" ] && FD_PEAK=$n
  sleep 1
done
wait "$WRK1" "$WRK2" "$ATTACK" || die "a load client failed: $(cat "$WORK"/wrk-*.out "$WORK/attack.err")"
kill -0 "$GW_PID" 2>/dev/null || die "the gateway died: $(tail -5 "$WORK/gateway.log")"
RSS_PEAK=$(kb "$GW_PID" VmHWM)
RSS_END=$(kb "$GW_PID" VmRSS)
FD_END=$(fds "$GW_PID")

# --- afterwards: descriptors back to the baseline ------------------------------------------------------
status=$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $COOKIE" "http://127.0.0.1:$GW_PORT/private")
[ "$status" = 200 ] || die "after the soak the gateway answers $status"
waited=0
while [ "$(fds "$GW_PID")" -gt "$FD_BEFORE" ] && [ "$waited" -lt "$AFTER_LIMIT" ]; do
  sleep 1; waited=$((waited + 1))
done
FD_AFTER=$(fds "$GW_PID")
RSS_AFTER=$(kb "$GW_PID" VmRSS)

# --- report ------------------------------------------------------------------------------------------
wrk_field() { # file what
  case $2 in
    rps) awk '/^Requests\/sec/ {print $2}' "$1" ;;
    requests) awk '/requests in/ {print $1}' "$1" ;;
    errors) awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10; found = 1} END {if (!found) print 0}' "$1" ;;
    non2xx) awk '/Non-2xx/ {print $5; found = 1} END {if (!found) print 0}' "$1" ;;
    p99) awk '$1 == "99%" {print $2}' "$1" ;;
  esac
}
ERRORS=0
echo
echo "Soak of ${DURATION} s on $(nproc) CPUs: portcullis (header_read_timeout $HEADER_READ_TIMEOUT, max_connections ${MAX_CONNS:-?} from the open-file limit)"
echo
echo "| load | connections | requests | req/s | socket errors | non-2xx |"
echo "|---|---:|---:|---:|---:|---:|"
for f in public auth; do
  out="$WORK/wrk-$f.out"
  [ "$f" = public ] && name="wrk, public route" && c=$HALF || { name="wrk, authenticated route (session checked)"; c=$((CONNS - HALF)); }
  e=$(wrk_field "$out" errors); n=$(wrk_field "$out" non2xx)
  ERRORS=$((ERRORS + e + n))
  echo "| $name | $c | $(wrk_field "$out" requests) | $(wrk_field "$out" rps) | $e | $n |"
done
echo
echo "Hostile connections (reopened whenever closed): $(cat "$WORK/attack.out")"
echo
echo "| gateway | before | during (peak) | end of load | after |"
echo "|---|---:|---:|---:|---:|"
echo "| open file descriptors | $FD_BEFORE | $FD_PEAK | $FD_END | $FD_AFTER (after ${waited} s) |"
echo "| RSS (MiB) | $(mib "$RSS_BEFORE") | $(mib "$RSS_PEAK") (VmHWM) | $(mib "$RSS_END") | $(mib "$RSS_AFTER") |"
echo
[ "$ERRORS" -eq 0 ] || die "$ERRORS errors or non-2xx answers"
[ "$FD_AFTER" -le "$FD_BEFORE" ] || die "open files did not come back to $FD_BEFORE within ${AFTER_LIMIT}s: $FD_AFTER"
log "0 errors; open files back to the baseline"
