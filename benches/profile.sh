#!/usr/bin/env bash
# Instructions per proxied request: the gateway under valgrind's callgrind, an nginx upstream, a real
# login against the development provider (examples/bench_login.rs), then wrk with the session cookie.
#
# Usage: benches/profile.sh [NAME]      writes target/profile/NAME.cg* (NAME defaults to "gateway")
# Needs valgrind, nginx, wrk and curl (Debian: valgrind nginx-light wrk curl); run after
# `cargo build --release --bin portcullis` and then `cargo build --release --example bench_login`
# (two builds: one would give the binary the development provider's test-only features). CONNS (default 4) and DURATION
# (default 5s) tune the measured wrk run. FORWARD_AUTH=1 measures forward-auth checks instead: the
# request nginx's auth_request sends, `GET /oauth2/auth` with `X-Original-URI: /` and the cookie. Everything listens on free ports of 127.0.0.1.
# Read the result with `callgrind_annotate --inclusive=yes target/profile/NAME.cg.1`.
set -euo pipefail
cd "$(dirname "$0")/.."
SCRIPT=profile.sh
# shellcheck source=benches/lib.sh
source benches/lib.sh
NAME=${1:-gateway}
BIN=target/release/portcullis
LOGIN=target/release/examples/bench_login
for tool in valgrind callgrind_control callgrind_annotate nginx wrk curl; do
  command -v "$tool" >/dev/null || { echo "profile.sh: $tool is needed" >&2; exit 1; }
done
[[ -x $BIN && -x $LOGIN ]] || { echo "profile.sh: build $BIN and $LOGIN first" >&2; exit 1; }

WORK=$(mktemp -d /tmp/portcullis-profile.XXXXXX)
OUT=target/profile
mkdir -p "$OUT"
rm -f "$OUT/$NAME".cg*
PIDS=()
trap cleanup EXIT

UP=$(free_port); GW=$(free_port); PV=$(free_port)

cat >"$WORK/up.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/up.pid; error_log $WORK/err.log warn;
events {}
http {
  access_log off; keepalive_requests 1000000;
  client_body_temp_path $WORK/b; proxy_temp_path $WORK/p; fastcgi_temp_path $WORK/f; uwsgi_temp_path $WORK/u; scgi_temp_path $WORK/s;
  server { listen 127.0.0.1:$UP; location / { return 200 'portcullis load benchmark: a small response from the upstream, about one hundred bytes long!!\n'; } }
}
CONF
cat >"$WORK/gw.toml" <<CONF
[server]
listen = "127.0.0.1:$GW"
public_url = "http://127.0.0.1:$GW"
$([[ ${FORWARD_AUTH:-0} == 1 ]] && echo 'trusted_proxies = ["127.0.0.1/32"]   # X-Original-URI is believed')
[upstream]
url = "http://127.0.0.1:$UP"
[oidc]
issuer = "http://127.0.0.1:$PV"
client_id = "bench"
client_secret = "bench-secret"
[session]
secret = "$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
[headers]
"X-Forwarded-User" = "sub"
"X-Forwarded-Email" = "email"
"X-Forwarded-Preferred-Username" = "preferred_username"
"X-Forwarded-Groups" = "groups"
[log]
access_log = false   # like the upstream's "access_log off": the request path, not log writing
CONF

nginx -e "$WORK/err.log" -p "$WORK" -c "$WORK/up.conf" & PIDS+=($!)
mkfifo "$WORK/in"
"$LOGIN" provider "$PV" "http://127.0.0.1:$GW/oauth2/callback" bench bench-secret <"$WORK/in" >/dev/null 2>&1 & PIDS+=($!)
exec 7>"$WORK/in"
valgrind --tool=callgrind --callgrind-out-file="$OUT/$NAME.cg" "$BIN" --config "$WORK/gw.toml" 2>"$WORK/gw.log" &
GW_PID=$!; PIDS+=("$GW_PID")
for _ in $(seq 1 300); do curl -sf -o /dev/null "http://127.0.0.1:$GW/readyz" && break; sleep 0.2; done
COOKIE=$("$LOGIN" login "http://127.0.0.1:$GW" / 1 1 30 | sed -n 's/^cookie=//p')
[[ -n $COOKIE ]] || { echo "profile.sh: the login failed" >&2; cat "$WORK/gw.log" >&2; exit 1; }
STATUS=$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $COOKIE" "http://127.0.0.1:$GW/")
[[ $STATUS == 200 ]] || { echo "profile.sh: the session cookie got $STATUS" >&2; exit 1; }

URL="http://127.0.0.1:$GW/"
EXTRA=(-H 'Accept: text/html')
if [[ ${FORWARD_AUTH:-0} == 1 ]]; then
  URL="http://127.0.0.1:$GW/oauth2/auth"
  EXTRA=(-H 'X-Original-URI: /')
  STATUS=$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $COOKIE" "${EXTRA[@]}" "$URL")
  [[ $STATUS == 202 ]] || { echo "profile.sh: the forward-auth check got $STATUS" >&2; exit 1; }
fi

# Warm the pools and code paths, then count only the measured run.
wrk -t1 -c4 -d2s -H "Cookie: $COOKIE" "${EXTRA[@]}" "$URL" >/dev/null
callgrind_control -z "$GW_PID" >/dev/null 2>&1
wrk -t1 -c"${CONNS:-4}" -d"${DURATION:-5s}" -H "Cookie: $COOKIE" "${EXTRA[@]}" "$URL" >"$WORK/wrk.out"
callgrind_control -d "$GW_PID" >/dev/null 2>&1
sleep 1
N=$(awk '/requests in/ {print $1}' "$WORK/wrk.out")
F=$(ls -t "$OUT/$NAME".cg.* | head -1)
IR=$(callgrind_annotate "$F" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
grep -E 'requests in|Non-2xx' "$WORK/wrk.out"
echo "requests=$N instructions=$IR per_request=$((IR / N)) profile=$F"
