#!/usr/bin/env bash
# Load benchmark: portcullis checking a session on every request (cookie store, and Redis store with a
# redis-server started here), side by side with nginx proxying with no authentication at all, with
# nginx asking portcullis at /oauth2/auth before each request (auth_request, the forward-auth layout of
# deploy/nginx), and with the upstream alone.
#
#   benches/load.sh                    # 3 alternating rounds, wrk -t1 -c50 and -c1, 10 s each
#   ROUNDS=5 DURATION=20s benches/load.sh
#
# Everything listens on 127.0.0.1 (free high ports). Servers are pinned to CPU $SERVER_CPU, wrk and the
# login client to $CLIENT_CPU. Installs nginx, wrk and redis-server from Debian's packages when missing.
# Prints a markdown table on stdout; progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
LOGINS=${LOGINS:-1000}
LOGIN_CONCURRENCY=${LOGIN_CONCURRENCY:-4}
PORTCULLIS=${PORTCULLIS:-target/release/portcullis}
HELPER=${HELPER:-target/release/examples/bench_login}

log() { echo "load.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# --- tools -----------------------------------------------------------------------------------------
if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null || ! command -v redis-server >/dev/null; then
  log "installing nginx, wrk and redis-server"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx wrk redis-server redis-tools >&2
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "building (release)"
  # Two builds: in one, the example's dev-dependencies would turn on the development provider's
  # misbehaviour feature in the binary too (features are unified per build), and the binary under
  # test must be the one that ships.
  cargo build --release --locked --bin portcullis >&2
  cargo build --release --locked --example bench_login >&2
fi
CLK_TCK=$(getconf CLK_TCK)

# --- processes and cleanup ------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/portcullis-load.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

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

# The process and its children (nginx: master and worker).
proc_tree() { echo "$1" $(pgrep -P "$1" || true); }
# Sum of utime+stime in clock ticks over the given pids.
cpu_ticks() {
  local total=0 pid fields
  for pid in "$@"; do
    [ -r "/proc/$pid/stat" ] || continue
    fields=$(sed 's/^.*) //' "/proc/$pid/stat")
    set -- $fields
    total=$((total + ${12} + ${13}))
  done
  echo "$total"
}
# Sum of VmHWM (kB) over the given pids.
peak_rss_kb() {
  local total=0 pid kb
  for pid in "$@"; do
    kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    total=$((total + ${kb:-0}))
  done
  echo "$total"
}

UP_PORT=$(free_port); NGX_PORT=$(free_port); GW_PORT=$(free_port); PROV_PORT=$(free_port)
GWR_PORT=$(free_port); REDIS_PORT=$(free_port); FA_PORT=$(free_port)
BODY="portcullis load benchmark: a small response from the upstream, about one hundred bytes long!!"

nginx_conf() { # name, server block
  cat >"$WORK/$1.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/$1.pid;
error_log $WORK/$1-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/$1-body;
  proxy_temp_path $WORK/$1-proxy;
  fastcgi_temp_path $WORK/$1-fastcgi;
  uwsgi_temp_path $WORK/$1-uwsgi;
  scgi_temp_path $WORK/$1-scgi;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
$2
}
EOF
}

nginx_conf upstream "
  server {
    listen 127.0.0.1:$UP_PORT;
    default_type text/plain;
    location / { return 200 '$BODY\n'; }
    # Counts the requests that reach the upstream, and shows the identity it received.
    location = /canary { access_log $WORK/canary.log; return 200 'user=\$http_x_forwarded_user\n'; }
  }"
nginx_conf proxy "
  upstream app { server 127.0.0.1:$UP_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$NGX_PORT;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection '';
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Forwarded-Proto \$scheme;
    }
  }"
# nginx in front, asking the gateway (the cookie-store one) before each request: deploy/nginx's
# auth_request layout, without TLS and with one identity header copied per mapped claim.
nginx_conf fauth "
  upstream app { server 127.0.0.1:$UP_PORT; keepalive 64; }
  upstream portcullis { server 127.0.0.1:$GW_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$FA_PORT;
    proxy_http_version 1.1;
    proxy_set_header Connection '';
    location = /oauth2/auth {
      internal;
      proxy_pass http://portcullis;
      proxy_method GET;
      proxy_pass_request_body off;
      proxy_set_header Content-Length '';
      proxy_set_header Host \$http_host;
      proxy_set_header X-Original-URI \$request_uri;
    }
    location / {
      auth_request /oauth2/auth;
      auth_request_set \$auth_user \$upstream_http_x_forwarded_user;
      auth_request_set \$auth_email \$upstream_http_x_forwarded_email;
      auth_request_set \$auth_username \$upstream_http_x_forwarded_preferred_username;
      auth_request_set \$auth_groups \$upstream_http_x_forwarded_groups;
      proxy_pass http://app;
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Forwarded-User \$auth_user;
      proxy_set_header X-Forwarded-Email \$auth_email;
      proxy_set_header X-Forwarded-Preferred-Username \$auth_username;
      proxy_set_header X-Forwarded-Groups \$auth_groups;
    }
  }"

CLIENT_ID=portcullis-load
CLIENT_SECRET=load-benchmark-secret
SESSION_SECRET=$("$PORTCULLIS" secret)
cat >"$WORK/gateway.toml" <<EOF
[server]
listen = "127.0.0.1:$GW_PORT"
public_url = "http://127.0.0.1:$GW_PORT"
# nginx (fauth) asks from here: its X-Original-URI is believed.
trusted_proxies = ["127.0.0.1/32"]
[upstream]
url = "http://127.0.0.1:$UP_PORT"
[oidc]
issuer = "http://127.0.0.1:$PROV_PORT"
client_id = "$CLIENT_ID"
client_secret = "$CLIENT_SECRET"
client_auth = "client_secret_basic"
scopes = ["openid", "profile", "email"]
pkce = true
[session]
secret = "$SESSION_SECRET"
cookie_name = "_portcullis"
lifetime = "12h"
[headers]
"X-Forwarded-User" = "sub"
"X-Forwarded-Email" = "email"
"X-Forwarded-Preferred-Username" = "preferred_username"
"X-Forwarded-Groups" = "groups"
[log]
level = "info"
# Like nginx's "access_log off" above: neither side writes a line per request.
access_log = false
EOF
# The same gateway on the Redis store.
sed -e "s/127.0.0.1:$GW_PORT/127.0.0.1:$GWR_PORT/g" \
  -e "s|^lifetime = \"12h\"|lifetime = \"12h\"\nstore = \"redis\"\nredis_url = \"redis://127.0.0.1:$REDIS_PORT\"|" \
  "$WORK/gateway.toml" >"$WORK/gateway-redis.toml"

log "starting upstream :$UP_PORT, nginx proxy :$NGX_PORT, provider :$PROV_PORT, portcullis :$GW_PORT, portcullis on Redis :$GWR_PORT, redis :$REDIS_PORT"
taskset -c "$SERVER_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$WORK" --logfile "$WORK/redis.log" &
REDIS_PID=$!; PIDS+=("$REDIS_PID")
taskset -c "$SERVER_CPU" "$NGINX" -e "$WORK/upstream-error.log" -p "$WORK" -c "$WORK/upstream.conf" 2>>"$WORK/nginx.log" &
UP_PID=$!; PIDS+=("$UP_PID")
taskset -c "$SERVER_CPU" "$NGINX" -e "$WORK/proxy-error.log" -p "$WORK" -c "$WORK/proxy.conf" 2>>"$WORK/nginx.log" &
NGX_PID=$!; PIDS+=("$NGX_PID")
taskset -c "$SERVER_CPU" "$NGINX" -e "$WORK/fauth-error.log" -p "$WORK" -c "$WORK/fauth.conf" 2>>"$WORK/nginx.log" &
FA_PID=$!; PIDS+=("$FA_PID")
# The provider reads its stdin until it closes: a FIFO held open by this script.
mkfifo "$WORK/provider.in"
taskset -c "$CLIENT_CPU" "$HELPER" provider "$PROV_PORT" \
  "http://127.0.0.1:$GW_PORT/oauth2/callback,http://127.0.0.1:$GWR_PORT/oauth2/callback" \
  "$CLIENT_ID" "$CLIENT_SECRET" <"$WORK/provider.in" >"$WORK/provider.log" 2>&1 &
PROV_PID=$!; PIDS+=("$PROV_PID")
exec 7>"$WORK/provider.in"
taskset -c "$SERVER_CPU" "$PORTCULLIS" --config "$WORK/gateway.toml" >/dev/null 2>"$WORK/gateway.log" &
GW_PID=$!; PIDS+=("$GW_PID")
for _ in $(seq 1 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
taskset -c "$SERVER_CPU" "$PORTCULLIS" --config "$WORK/gateway-redis.toml" >/dev/null 2>"$WORK/gateway-redis.log" &
GWR_PID=$!; PIDS+=("$GWR_PID")

wait_status "http://127.0.0.1:$UP_PORT/" 200
wait_status "http://127.0.0.1:$NGX_PORT/" 200
wait_status "http://127.0.0.1:$GW_PORT/readyz" 200
wait_status "http://127.0.0.1:$GWR_PORT/readyz" 200

# --- a real login, then check that the cookie authenticates and that nothing else gets through ------
log "logging in against the development provider"
taskset -c "$CLIENT_CPU" "$HELPER" login "http://127.0.0.1:$GW_PORT" /canary 1 1 30 >"$WORK/login1.out"
COOKIE=$(sed -n 's/^cookie=//p' "$WORK/login1.out")
[ -n "$COOKIE" ] || die "no session cookie from the login"
status=$(curl -s -o "$WORK/canary.body" -w '%{http_code}' -H "Cookie: $COOKIE" "http://127.0.0.1:$GW_PORT/canary")
[ "$status" = 200 ] || die "the session cookie does not authenticate (HTTP $status)"
grep -q '^user=..*' "$WORK/canary.body" || die "no identity reached the upstream: $(cat "$WORK/canary.body")"
IDENTITY=$(cat "$WORK/canary.body")
hits_before=$(wc -l <"$WORK/canary.log")
s_api=$(curl -s -o /dev/null -w '%{http_code}' -H 'Accept: application/json' "http://127.0.0.1:$GW_PORT/canary")
s_browser=$(curl -s -o /dev/null -w '%{http_code}' -H 'Accept: text/html' "http://127.0.0.1:$GW_PORT/canary")
s_forged=$(curl -s -o /dev/null -w '%{http_code}' -H 'Accept: application/json' \
  -H "Cookie: _portcullis=AQ${COOKIE: -40}" "http://127.0.0.1:$GW_PORT/canary")
hits_after=$(wc -l <"$WORK/canary.log")
[ "$s_api" = 401 ] && [ "$s_browser" = 302 ] && [ "$s_forged" = 401 ] && [ "$hits_after" = "$hits_before" ] ||
  die "requests without a valid session reached the upstream or were not refused ($s_api, $s_browser, $s_forged; upstream hits $hits_before -> $hits_after)"
log "verified: session -> 200 with '$IDENTITY' at the upstream; no cookie -> 401/302, forged -> 401, upstream not reached"
taskset -c "$CLIENT_CPU" "$HELPER" login "http://127.0.0.1:$GWR_PORT" /canary 1 1 30 >"$WORK/login-redis.out"
COOKIE_REDIS=$(sed -n 's/^cookie=//p' "$WORK/login-redis.out")
[ -n "$COOKIE_REDIS" ] || die "no session cookie from the login on the Redis store"
status=$(curl -s -o "$WORK/canary-redis.body" -w '%{http_code}' -H "Cookie: $COOKIE_REDIS" "http://127.0.0.1:$GWR_PORT/canary")
[ "$status" = 200 ] && grep -q '^user=..*' "$WORK/canary-redis.body" ||
  die "the Redis-store session does not authenticate (HTTP $status)"
[ "$(redis-cli -p "$REDIS_PORT" --scan --pattern 'portcullis:s:*' | wc -l)" -ge 1 ] ||
  die "the Redis store holds no session"
log "verified: the Redis-store session -> 200 with identity; the session is in Redis"
status=$(curl -s -o "$WORK/canary-fauth.body" -w '%{http_code}' -H "Cookie: $COOKIE" "http://127.0.0.1:$FA_PORT/canary")
[ "$status" = 200 ] && [ "$(cat "$WORK/canary-fauth.body")" = "$IDENTITY" ] ||
  die "nginx + auth_request: the session does not authenticate (HTTP $status: $(cat "$WORK/canary-fauth.body"))"
hits_before=$(wc -l <"$WORK/canary.log")
s_none=$(curl -s -o /dev/null -w '%{http_code}' -H 'X-Forwarded-User: forged' "http://127.0.0.1:$FA_PORT/canary")
[ "$s_none" = 401 ] && [ "$(wc -l <"$WORK/canary.log")" = "$hits_before" ] ||
  die "nginx + auth_request: a request without a session got $s_none or reached the upstream"
log "verified: nginx + auth_request -> 200 with '$IDENTITY'; no cookie -> 401, upstream not reached"

# --- throughput rounds ------------------------------------------------------------------------------
declare -A TARGET_URL=(
  [direct]="http://127.0.0.1:$UP_PORT/"
  [nginx]="http://127.0.0.1:$NGX_PORT/"
  [portcullis]="http://127.0.0.1:$GW_PORT/"
  [redis]="http://127.0.0.1:$GWR_PORT/"
  [fauth]="http://127.0.0.1:$FA_PORT/"
)
# Whose CPU a variant costs: forward-auth is nginx and the gateway together.
declare -A TARGET_PID=([direct]="" [nginx]="$NGX_PID" [portcullis]="$GW_PID" [redis]="$GWR_PID"
  [fauth]="$FA_PID $GW_PID")
declare -A TARGET_COOKIE=([direct]="$COOKIE" [nginx]="$COOKIE" [portcullis]="$COOKIE" [redis]="$COOKIE_REDIS"
  [fauth]="$COOKIE")
VARIANTS=(direct nginx portcullis redis fauth)
# Redis commands processed, for the calls per proxied request.
redis_calls() { redis-cli -p "$REDIS_PORT" info stats | awk -F: '/^total_commands_processed/ {print $2 + 0}'; }
REDIS_CALLS=0; REDIS_REQUESTS=0
declare -A RPS P50 P99 CPU

to_us() { # wrk latency such as 812.00us, 1.23ms, 1.01s -> microseconds
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
    if (u == "us") f = 1; else if (u == "ms") f = 1000; else if (u == "s") f = 1000000; else f = 1;
    printf "%.0f", n * f }'
}

run_wrk() { # variant connections
  local v=$1 c=$2 pids before after out requests
  pids=""; for pid in ${TARGET_PID[$v]}; do pids="$pids $(proc_tree "$pid")"; done
  local calls_before; calls_before=$(redis_calls)
  before=$(cpu_ticks $pids)
  out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$c" -d"$DURATION" --latency -H "Cookie: ${TARGET_COOKIE[$v]}" \
    -H 'Accept: text/html' "${TARGET_URL[$v]}")
  after=$(cpu_ticks $pids)
  if [ "$v" = redis ]; then
    # The INFO that reads the counter counts itself: one per reading.
    REDIS_CALLS=$((REDIS_CALLS + $(redis_calls) - calls_before - 1))
    REDIS_REQUESTS=$((REDIS_REQUESTS + $(echo "$out" | awk '/requests in/ {print $1}')))
  fi
  echo "$out" | grep -q 'Non-2xx' && die "$v: non-2xx responses: $out"
  requests=$(echo "$out" | awk '/requests in/ {print $1}')
  RPS[$v,$c]+="$(echo "$out" | awk '/^Requests\/sec/ {print $2}') "
  P50[$v,$c]+="$(to_us "$(echo "$out" | awk '$1 == "50%" {print $2}')") "
  P99[$v,$c]+="$(to_us "$(echo "$out" | awk '$1 == "99%" {print $2}')") "
  if [ -n "$pids" ]; then
    CPU[$v,$c]+="$(awk -v t=$((after - before)) -v n="$requests" -v hz="$CLK_TCK" 'BEGIN {printf "%.2f", t / hz / n * 1e6}') "
  fi
  log "$v c=$c: $(echo "$out" | awk '/^Requests\/sec/ {print $2}') req/s, cpu $((after - before)) ticks for $requests requests"
}

median() { printf '%s\n' $1 | sort -g | awk '{a[NR] = $1} END {if (NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%g\n", (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

log "warming up"
for v in "${VARIANTS[@]}"; do
  taskset -c "$CLIENT_CPU" wrk -t1 -c50 -d2s -H "Cookie: ${TARGET_COOKIE[$v]}" "${TARGET_URL[$v]}" >/dev/null
done
for round in $(seq 1 "$ROUNDS"); do
  log "round $round of $ROUNDS"
  for c in 50 1; do
    for v in "${VARIANTS[@]}"; do run_wrk "$v" "$c"; done
  done
done
RSS_NGINX=$(peak_rss_kb $(proc_tree "$NGX_PID"))
RSS_GW=$(peak_rss_kb "$GW_PID")
RSS_GWR=$(peak_rss_kb "$GWR_PID")
RSS_FA=$(peak_rss_kb $(proc_tree "$FA_PID") "$GW_PID")

# --- logins -----------------------------------------------------------------------------------------
log "$LOGINS logins, $LOGIN_CONCURRENCY at a time"
before=$(cpu_ticks "$GW_PID")
taskset -c "$CLIENT_CPU" "$HELPER" login "http://127.0.0.1:$GW_PORT" /canary "$LOGINS" "$LOGIN_CONCURRENCY" 120 >"$WORK/logins.out"
after=$(cpu_ticks "$GW_PID")
LOGIN_DONE=$(sed -n 's/^logins=\([0-9]*\).*/\1/p' "$WORK/logins.out")
LOGIN_RATE=$(sed -n 's/.*logins_per_sec=\([0-9.]*\).*/\1/p' "$WORK/logins.out")
LOGIN_CPU_US=$(awk -v t=$((after - before)) -v n="$LOGIN_DONE" -v hz="$CLK_TCK" 'BEGIN {printf "%.0f", t / hz / n * 1e6}')

# --- report -----------------------------------------------------------------------------------------
kb_to_mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b + 0 == 0) print "-"; else printf "%.2f", a / b}'; }
echo
echo "Medians of $ROUNDS alternating rounds; wrk -t1 -d$DURATION, servers on CPU $SERVER_CPU, wrk on CPU $CLIENT_CPU;"
echo "every request carries the session cookie (portcullis decrypts and checks it, then proxies)."
echo
echo "| target | conns | req/s | p50 (us) | p99 (us) | proxy CPU per request (us) | proxy peak RSS (MiB) |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for c in 50 1; do
  for v in "${VARIANTS[@]}"; do
    case $v in
      direct) name="(a) upstream direct"; rss="-" ;;
      nginx) name="(b) nginx proxy, no auth"; rss=$(kb_to_mib "$RSS_NGINX") ;;
      portcullis) name="(c) portcullis, session"; rss=$(kb_to_mib "$RSS_GW") ;;
      redis) name="(d) portcullis, session in Redis"; rss=$(kb_to_mib "$RSS_GWR") ;;
      fauth) name="(e) nginx + auth_request + portcullis"; rss=$(kb_to_mib "$RSS_FA") ;;
    esac
    cpu="-"; [ -n "${CPU[$v,$c]:-}" ] && cpu=$(median "${CPU[$v,$c]}")
    echo "| $name | $c | $(median "${RPS[$v,$c]}") | $(median "${P50[$v,$c]}") | $(median "${P99[$v,$c]}") | $cpu | $rss |"
  done
done
echo
echo "| (c) / (b) | conns | req/s | p50 | p99 | CPU per request | peak RSS |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for c in 50 1; do
  echo "| ratio | $c | $(ratio "$(median "${RPS[portcullis,$c]}")" "$(median "${RPS[nginx,$c]}")") \
| $(ratio "$(median "${P50[portcullis,$c]}")" "$(median "${P50[nginx,$c]}")") \
| $(ratio "$(median "${P99[portcullis,$c]}")" "$(median "${P99[nginx,$c]}")") \
| $(ratio "$(median "${CPU[portcullis,$c]}")" "$(median "${CPU[nginx,$c]}")") \
| $(ratio "$RSS_GW" "$RSS_NGINX") |"
done
echo
echo "| (d) Redis store | conns | req/s vs nginx (b) | req/s vs cookie store (c) | p99 vs (c) | CPU per request vs (c) |"
echo "|---|---:|---:|---:|---:|---:|"
for c in 50 1; do
  echo "| ratio | $c | $(ratio "$(median "${RPS[redis,$c]}")" "$(median "${RPS[nginx,$c]}")") \
| $(ratio "$(median "${RPS[redis,$c]}")" "$(median "${RPS[portcullis,$c]}")") \
| $(ratio "$(median "${P99[redis,$c]}")" "$(median "${P99[portcullis,$c]}")") \
| $(ratio "$(median "${CPU[redis,$c]}")" "$(median "${CPU[portcullis,$c]}")") |"
done
echo
echo "| (e) forward-auth / (b) | conns | req/s | p50 | p99 | CPU per request (nginx and gateway) |"
echo "|---|---:|---:|---:|---:|---:|"
for c in 50 1; do
  echo "| ratio | $c | $(ratio "$(median "${RPS[fauth,$c]}")" "$(median "${RPS[nginx,$c]}")") \
| $(ratio "$(median "${P50[fauth,$c]}")" "$(median "${P50[nginx,$c]}")") \
| $(ratio "$(median "${P99[fauth,$c]}")" "$(median "${P99[nginx,$c]}")") \
| $(ratio "$(median "${CPU[fauth,$c]}")" "$(median "${CPU[nginx,$c]}")") |"
done
echo
echo "Redis commands per proxied request (d), all rounds: $(awk -v a="$REDIS_CALLS" -v b="$REDIS_REQUESTS" 'BEGIN {if (b == 0) print "-"; else printf "%.5f (%d commands, %d requests)", a / b, a, b}')"
echo
echo "| logins | logins/s (concurrency $LOGIN_CONCURRENCY) | gateway CPU per login (us, provider excluded) |"
echo "|---:|---:|---:|"
echo "| $LOGIN_DONE | $LOGIN_RATE | $LOGIN_CPU_US |"
echo
echo "Raw samples (req/s): $(for c in 50 1; do for v in "${VARIANTS[@]}"; do printf '%s c%s: %s; ' "$v" "$c" "${RPS[$v,$c]}"; done; done)"
