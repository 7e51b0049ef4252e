#!/usr/bin/env bash
# Load benchmark: portcullis checking a session on every request, side by side with nginx proxying
# with no authentication at all, with the upstream alone, and with Apache's mod_auth_openidc (the
# authenticating gateway users would pick instead). One run measures every shape below, in rounds that
# each run every variant once, and prints the medians with their spread. benches/README.md says what
# each row measures and how.
#
#   benches/load.sh                    # 3 alternating rounds, 10 s per measurement
#   ROUNDS=5 DURATION=20s benches/load.sh
#   ROUNDS=1 DURATION=3s LOGINS=100 SETTLE=2 benches/load.sh     # a quick check that everything runs
#   KEEP_WORK=1 ...                    # keep the configurations and the servers' logs
#
# Shapes: wrk -t1 at -c50, -c1 and -c$WIDE (1000); h2load -c10 -m10 over HTTP/2 cleartext (prior
# knowledge); nginx auth_request to portcullis's /oauth2/auth beside auth_request to a static 202
# (skipped, with a log line, when the gateway does not answer /oauth2/auth); real logins through
# portcullis and through mod_auth_openidc against the same development provider; and at -c50 the
# floor, a program that forwards the bytes and checks nothing (examples/bench_login.rs), as a yardstick.
#
# Everything listens on 127.0.0.1 (free high ports). Servers are pinned to CPU $SERVER_CPU, the load
# generators and the provider to $CLIENT_CPU. Installs nginx, wrk, redis-server, h2load (nghttp2-client),
# apache2 and libapache2-mod-auth-openidc from Debian's packages when missing. Prints a markdown report on
# stdout; progress goes to stderr.

# Lists of pids and of samples are space-separated strings, split into words where they are used.
# shellcheck disable=SC2046,SC2086
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
WIDE=${WIDE:-1000}            # connections of the wide rows
SETTLE=${SETTLE:-12}          # seconds after a wide row before the settled RSS is read (jemalloc decays freed pages over 10 s)
H2_CLIENTS=${H2_CLIENTS:-10}
H2_STREAMS=${H2_STREAMS:-10}
LOGINS=${LOGINS:-1000}        # per gateway and round
LOGIN_CONCURRENCY=${LOGIN_CONCURRENCY:-4}
SIGNING_ALG=${SIGNING_ALG:-ES256}   # the provider's id_token signature: ES256, or RS256 (the provider's CPU then bounds the logins)
PORTCULLIS=${PORTCULLIS:-target/release/portcullis}
HELPER=${HELPER:-target/release/examples/bench_login}
APACHE_MODULES=${APACHE_MODULES:-/usr/lib/apache2/modules}
APACHE_SHM_MAX=${APACHE_SHM_MAX:-}   # mod_auth_openidc's OIDCCacheShmMax; unset: its default (500 entries)

SCRIPT=load.sh
# shellcheck source=benches/lib.sh
source benches/lib.sh

# Seconds in a duration such as 10s, 2m or 10 (wrk and h2load take the same forms).
seconds_of() {
  case $1 in
    *ms) echo 1 ;;
    *s) echo "${1%s}" ;;
    *m) echo $((${1%m} * 60)) ;;
    *h) echo $((${1%h} * 3600)) ;;
    *) echo "$1" ;;
  esac
}
DURATION_S=$(seconds_of "$DURATION")
# Every load generator run is cut off well after its own duration would end it.
LIMIT=$((DURATION_S + 30))

# --- tools -----------------------------------------------------------------------------------------
missing=()
command -v nginx >/dev/null || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
command -v redis-server >/dev/null || missing+=(redis-server redis-tools)
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v apache2 >/dev/null || missing+=(apache2)
[ -e "$APACHE_MODULES/mod_auth_openidc.so" ] || missing+=(libapache2-mod-auth-openidc)
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >&2
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
APACHE=$(command -v apache2 || echo /usr/sbin/apache2)
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "building (release)"
  # Two builds: in one, the example's dev-dependencies would turn on the development provider's
  # misbehaviour feature in the binary too (features are unified per build), and the binary under
  # test must be the one that ships.
  cargo build --release --locked --bin portcullis >&2
  cargo build --release --locked --example bench_login >&2
fi
CLK_TCK=$(getconf CLK_TCK)

# Open files: the wide rows hold $WIDE client connections, and a proxy as many again upstream. Every
# process started below inherits the raised limit (portcullis sizes its connection limit from it).
NOFILE=$(ulimit -Hn)
[ "$NOFILE" = unlimited ] && NOFILE=1048576
ulimit -n "$NOFILE" 2>/dev/null || NOFILE=$(ulimit -n)
[ "$NOFILE" -ge $((2 * WIDE + 256)) ] ||
  die "the open-file limit ($NOFILE, hard limit $(ulimit -Hn)) is too low for $WIDE connections"
# nginx's connection table is allocated whole at start, so it is sized for the wide rows, not the limit.
NGINX_CONNECTIONS=$((2 * WIDE + 1024))
NGINX_NOFILE=$((2 * NGINX_CONNECTIONS < NOFILE ? 2 * NGINX_CONNECTIONS : NOFILE))

# --- processes and cleanup ------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/portcullis-load.XXXXXX)
chmod 755 "$WORK"
PIDS=()
trap cleanup EXIT
trap 'exit 130' INT TERM

# The given processes and their children (nginx: master and worker; Apache: parent and children).
proc_tree() {
  local pid
  for pid in "$@"; do echo "$pid" $(pgrep -P "$pid" || true); done
}
# Sum of utime+stime, and of the reaped children's cutime+cstime (Apache replaces children under
# load), in clock ticks over the given pids.
cpu_ticks() {
  local total=0 pid fields
  for pid in "$@"; do
    [ -r "/proc/$pid/stat" ] || continue
    fields=$(sed 's/^.*) //' "/proc/$pid/stat")
    set -- $fields
    total=$((total + ${12} + ${13} + ${14} + ${15}))
  done
  echo "$total"
}
# Sum of a /proc/<pid>/status field (VmHWM: peak RSS, VmRSS: RSS now), in kB, over the given pids.
mem_kb() {
  local field=$1 total=0 pid kb
  shift
  for pid in "$@"; do
    kb=$(awk -v f="$field:" '$1 == f {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    total=$((total + ${kb:-0}))
  done
  echo "$total"
}
# Start a new peak: VmHWM falls back to the current RSS (proc(5), clear_refs).
reset_peak() {
  local pid
  for pid in "$@"; do echo 5 >"/proc/$pid/clear_refs" 2>/dev/null || true; done
}

UP_PORT=$(free_port); NGX_PORT=$(free_port); NGX_H2_PORT=$(free_port); GW_PORT=$(free_port)
PROV_PORT=$(free_port); GWR_PORT=$(free_port); REDIS_PORT=$(free_port); GWFA_PORT=$(free_port)
FA_GW_PORT=$(free_port); FA_STATIC_PORT=$(free_port); AUTH202_PORT=$(free_port); AP_PORT=$(free_port)
FLOOR_PORT=$(free_port)
BODY="portcullis load benchmark: a small response from the upstream, about one hundred bytes long!!"

nginx_conf() { # name, http block contents
  cat >"$WORK/$1.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile $NGINX_NOFILE;
daemon off;
pid $WORK/$1.pid;
error_log $WORK/$1-error.log warn;
events { worker_connections $NGINX_CONNECTIONS; }
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
# The same proxying in every nginx configuration (keep-alive to the upstream pool `app`).
PROXY_TO_APP="
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection '';
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Forwarded-Proto \$scheme;"
# HTTP/2 without TLS (prior knowledge): a parameter of `listen` before nginx 1.25.1, its own directive since.
NGINX_VERSION=$("$NGINX" -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p')
if [ "$(printf '%s\n' 1.25.1 "$NGINX_VERSION" | sort -V | head -1)" = 1.25.1 ]; then
  H2_LISTEN="listen 127.0.0.1:$NGX_H2_PORT; http2 on;"
else
  H2_LISTEN="listen 127.0.0.1:$NGX_H2_PORT http2;"
fi

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
    location / { $PROXY_TO_APP
    }
  }
  server {
    $H2_LISTEN
    location / { $PROXY_TO_APP
    }
  }"
# Forward-auth: nginx asks before each request (auth_request), through a keep-alive pool, either
# portcullis's /oauth2/auth or a server that answers 202 to everything (the floor any forward-auth
# service pays), and copies the identity of the answer onto the proxied request.
fa_server() { # port, auth pool, path
  echo "
  server {
    listen 127.0.0.1:$1;
    location / {
      auth_request /_auth;
      auth_request_set \$auth_user \$upstream_http_x_forwarded_user;
      auth_request_set \$auth_email \$upstream_http_x_forwarded_email;
      auth_request_set \$auth_username \$upstream_http_x_forwarded_preferred_username;
      auth_request_set \$auth_groups \$upstream_http_x_forwarded_groups;
      $PROXY_TO_APP
      proxy_set_header X-Forwarded-User \$auth_user;
      proxy_set_header X-Forwarded-Email \$auth_email;
      proxy_set_header X-Forwarded-Preferred-Username \$auth_username;
      proxy_set_header X-Forwarded-Groups \$auth_groups;
    }
    location = /_auth {
      internal;
      proxy_pass http://$2$3;
      proxy_pass_request_body off;
      proxy_set_header Content-Length '';
      proxy_set_header X-Original-URI \$request_uri;
      proxy_http_version 1.1;
      proxy_set_header Connection '';
      proxy_set_header Host \$host;
    }
  }"
}
nginx_conf forward-auth "
  upstream app { server 127.0.0.1:$UP_PORT; keepalive 64; }
  upstream auth_gateway { server 127.0.0.1:$GWFA_PORT; keepalive 64; }
  upstream auth_static { server 127.0.0.1:$AUTH202_PORT; keepalive 64; }
  $(fa_server "$FA_GW_PORT" auth_gateway /oauth2/auth)
  $(fa_server "$FA_STATIC_PORT" auth_static /auth)"
nginx_conf auth202 "
  server {
    listen 127.0.0.1:$AUTH202_PORT;
    location / { return 202; }
  }"

CLIENT_ID=portcullis-load
CLIENT_SECRET=load-benchmark-secret
SESSION_SECRET=$("$PORTCULLIS" secret)
cat >"$WORK/gateway.toml" <<EOF
[server]
listen = "127.0.0.1:$GW_PORT"
public_url = "http://127.0.0.1:$GW_PORT"
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
# The same gateway as nginx's forward-auth endpoint: it believes the X-Original-URI nginx sets, and
# the browser's address is nginx's. The cookie store needs no shared state, so the sessions of the
# first gateway are valid here.
sed -e "s|^listen = .*|listen = \"127.0.0.1:$GWFA_PORT\"\ntrusted_proxies = [\"127.0.0.1/32\"]|" \
  -e "s|^public_url = .*|public_url = \"http://127.0.0.1:$FA_GW_PORT\"|" \
  "$WORK/gateway.toml" >"$WORK/gateway-forward-auth.toml"

# Apache with mod_auth_openidc: its own foreground instance, private ServerRoot, event MPM with
# Debian's settings, sessions server-side in shared memory, the same upstream and identity headers.
AP_CLIENT_ID=apache-load
AP_CLIENT_SECRET=apache-load-benchmark-secret
AP_REDIRECT_URI="http://127.0.0.1:$AP_PORT/redirect_uri"
mkdir -p "$WORK/apache/run"
AP_USER=""
[ "$(id -u)" -eq 0 ] && AP_USER="User nobody
Group nogroup"
cat >"$WORK/apache/httpd.conf" <<EOF
ServerRoot "$WORK/apache"
ServerName 127.0.0.1
Listen 127.0.0.1:$AP_PORT
PidFile $WORK/apache/run/httpd.pid
DefaultRuntimeDir $WORK/apache/run
ErrorLog $WORK/apache/error.log
LogLevel warn
$AP_USER
LoadModule mpm_event_module $APACHE_MODULES/mod_mpm_event.so
LoadModule authn_core_module $APACHE_MODULES/mod_authn_core.so
LoadModule authz_core_module $APACHE_MODULES/mod_authz_core.so
LoadModule authz_user_module $APACHE_MODULES/mod_authz_user.so
LoadModule headers_module $APACHE_MODULES/mod_headers.so
LoadModule proxy_module $APACHE_MODULES/mod_proxy.so
LoadModule proxy_http_module $APACHE_MODULES/mod_proxy_http.so
LoadModule auth_openidc_module $APACHE_MODULES/mod_auth_openidc.so
StartServers 2
MinSpareThreads 25
MaxSpareThreads 75
ThreadLimit 64
ThreadsPerChild 25
MaxRequestWorkers 150
MaxConnectionsPerChild 0
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 75

OIDCProviderMetadataURL http://127.0.0.1:$PROV_PORT/.well-known/openid-configuration
OIDCClientID $AP_CLIENT_ID
OIDCClientSecret $AP_CLIENT_SECRET
OIDCProviderTokenEndpointAuth client_secret_basic
OIDCRedirectURI $AP_REDIRECT_URI
OIDCScope "openid profile email"
OIDCPKCEMethod S256
OIDCCryptoPassphrase $("$PORTCULLIS" secret)
OIDCCacheType shm
${APACHE_SHM_MAX:+OIDCCacheShmMax $APACHE_SHM_MAX}
OIDCSessionType server-cache
OIDCPassClaimsAs environment
OIDCRemoteUserClaim sub

<Location />
  AuthType openid-connect
  Require valid-user
</Location>
RequestHeader set X-Forwarded-User "%{OIDC_CLAIM_sub}e"
RequestHeader set X-Forwarded-Email "%{OIDC_CLAIM_email}e"
RequestHeader set X-Forwarded-Preferred-Username "%{OIDC_CLAIM_preferred_username}e"
RequestHeader set X-Forwarded-Groups "%{OIDC_CLAIM_groups}e"
ProxyPass /redirect_uri !
ProxyPass / http://127.0.0.1:$UP_PORT/
ProxyPreserveHost On
EOF

log "starting upstream :$UP_PORT, nginx proxy :$NGX_PORT (HTTP/2 :$NGX_H2_PORT), provider :$PROV_PORT, portcullis :$GW_PORT, portcullis on Redis :$GWR_PORT, redis :$REDIS_PORT"
log "forward-auth: nginx :$FA_GW_PORT -> portcullis :$GWFA_PORT, nginx :$FA_STATIC_PORT -> 202 :$AUTH202_PORT; Apache mod_auth_openidc :$AP_PORT; floor :$FLOOR_PORT"
taskset -c "$SERVER_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$WORK" --logfile "$WORK/redis.log" &
REDIS_PID=$!; PIDS+=("$REDIS_PID")
start_nginx() { # name; sets NGINX_PID
  taskset -c "$SERVER_CPU" "$NGINX" -e "$WORK/$1-error.log" -p "$WORK" -c "$WORK/$1.conf" 2>>"$WORK/nginx.log" &
  NGINX_PID=$!; PIDS+=("$NGINX_PID")
}
start_nginx upstream
start_nginx proxy; NGX_PID=$NGINX_PID
start_nginx forward-auth; NGXFA_PID=$NGINX_PID
start_nginx auth202; AUTH202_PID=$NGINX_PID
# The provider reads its stdin until it closes: a FIFO held open by this script.
mkfifo "$WORK/provider.in"
SIGNING_ALG=$SIGNING_ALG taskset -c "$CLIENT_CPU" "$HELPER" provider "$PROV_PORT" \
  "http://127.0.0.1:$GW_PORT/oauth2/callback,http://127.0.0.1:$GWR_PORT/oauth2/callback" \
  "$CLIENT_ID" "$CLIENT_SECRET" \
  "$AP_REDIRECT_URI" "$AP_CLIENT_ID" "$AP_CLIENT_SECRET" \
  <"$WORK/provider.in" >"$WORK/provider.log" 2>&1 &
PROV_PID=$!; PIDS+=("$PROV_PID")
exec 7>"$WORK/provider.in"
start_gateway() { # config name; sets GATEWAY_PID
  taskset -c "$SERVER_CPU" "$PORTCULLIS" --config "$WORK/$1.toml" >/dev/null 2>"$WORK/$1.log" &
  GATEWAY_PID=$!; PIDS+=("$GATEWAY_PID")
}
start_gateway gateway; GW_PID=$GATEWAY_PID
start_gateway gateway-forward-auth; GWFA_PID=$GATEWAY_PID
for _ in $(seq 1 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
start_gateway gateway-redis; GWR_PID=$GATEWAY_PID
# The floor: request heads forwarded as they came, answers copied back, nothing checked.
taskset -c "$SERVER_CPU" "$HELPER" floor "$FLOOR_PORT" "$UP_PORT" >/dev/null 2>"$WORK/floor.log" &
FLOOR_PID=$!; PIDS+=("$FLOOR_PID")

wait_status "http://127.0.0.1:$UP_PORT/" 200
wait_status "http://127.0.0.1:$NGX_PORT/" 200
wait_status "http://127.0.0.1:$AUTH202_PORT/" 202
wait_status "http://127.0.0.1:$PROV_PORT/.well-known/openid-configuration" 200
wait_status "http://127.0.0.1:$GW_PORT/readyz" 200
wait_status "http://127.0.0.1:$GWR_PORT/readyz" 200
wait_status "http://127.0.0.1:$GWFA_PORT/readyz" 200
wait_status "http://127.0.0.1:$FLOOR_PORT/" 200
# Apache reads the provider's metadata on the first login, so it starts after the provider is up.
taskset -c "$SERVER_CPU" "$APACHE" -d "$WORK/apache" -f "$WORK/apache/httpd.conf" -DFOREGROUND \
  >>"$WORK/apache/error.log" 2>&1 &
AP_PID=$!; PIDS+=("$AP_PID")

# --- a real login, then check that the cookie authenticates and that nothing else gets through ------
login_once() { # gateway URL; prints the Cookie header of a new session
  taskset -c "$CLIENT_CPU" timeout 60 "$HELPER" login "$1" /canary 1 1 30 | sed -n 's/^cookie=//p'
}
# The body of /canary through $1 with the Cookie header $2, or nothing unless the answer is 200.
canary() { curl -s -f --max-time 5 -H "Cookie: $2" "$1/canary" || true; }

log "logging in against the development provider"
COOKIE=$(login_once "http://127.0.0.1:$GW_PORT")
[ -n "$COOKIE" ] || die "no session cookie from the login"
IDENTITY=$(canary "http://127.0.0.1:$GW_PORT" "$COOKIE")
[[ $IDENTITY == user=?* ]] || die "the session cookie does not authenticate, or no identity reached the upstream: '$IDENTITY'"
hits_before=$(wc -l <"$WORK/canary.log")
s_api=$(curl -s -o /dev/null -w '%{http_code}' -H 'Accept: application/json' "http://127.0.0.1:$GW_PORT/canary")
s_browser=$(curl -s -o /dev/null -w '%{http_code}' -H 'Accept: text/html' "http://127.0.0.1:$GW_PORT/canary")
s_forged=$(curl -s -o /dev/null -w '%{http_code}' -H 'Accept: application/json' \
  -H "Cookie: _portcullis=AQ${COOKIE: -40}" "http://127.0.0.1:$GW_PORT/canary")
hits_after=$(wc -l <"$WORK/canary.log")
if [ "$s_api" != 401 ] || [ "$s_browser" != 302 ] || [ "$s_forged" != 401 ] || [ "$hits_after" != "$hits_before" ]; then
  die "requests without a valid session reached the upstream or were not refused ($s_api, $s_browser, $s_forged; upstream hits $hits_before -> $hits_after)"
fi
log "verified: session -> 200 with '$IDENTITY' at the upstream; no cookie -> 401/302, forged -> 401, upstream not reached"
h2_status=$(curl -s -o /dev/null -w '%{http_code} %{http_version}' --http2-prior-knowledge -H "Cookie: $COOKIE" \
  "http://127.0.0.1:$GW_PORT/canary")
[ "$h2_status" = "200 2" ] || die "portcullis does not serve HTTP/2 with prior knowledge (got '$h2_status')"
h2_status=$(curl -s -o /dev/null -w '%{http_code} %{http_version}' --http2-prior-knowledge "http://127.0.0.1:$NGX_H2_PORT/")
[ "$h2_status" = "200 2" ] || die "nginx does not serve HTTP/2 with prior knowledge on :$NGX_H2_PORT (got '$h2_status')"
log "verified: HTTP/2 with prior knowledge -> 200 from portcullis (with the session) and from nginx"
COOKIE_REDIS=$(login_once "http://127.0.0.1:$GWR_PORT")
[ -n "$COOKIE_REDIS" ] || die "no session cookie from the login on the Redis store"
[[ $(canary "http://127.0.0.1:$GWR_PORT" "$COOKIE_REDIS") == user=?* ]] ||
  die "the Redis-store session does not authenticate"
[ "$(redis-cli -p "$REDIS_PORT" --scan --pattern 'portcullis:s:*' | wc -l)" -ge 1 ] ||
  die "the Redis store holds no session"
log "verified: the Redis-store session -> 200 with identity; the session is in Redis"

# Forward-auth runs where the gateway answers /oauth2/auth: 202 for a session, 401 without one.
FORWARD_AUTH=""
fa_session=$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $COOKIE" -H 'X-Original-URI: /' \
  "http://127.0.0.1:$GWFA_PORT/oauth2/auth")
fa_none=$(curl -s -o /dev/null -w '%{http_code}' -H 'X-Original-URI: /' "http://127.0.0.1:$GWFA_PORT/oauth2/auth")
if [ "$fa_session" = 202 ] && [ "$fa_none" = 401 ]; then
  [[ $(canary "http://127.0.0.1:$FA_GW_PORT" "$COOKIE") == user=?* ]] ||
    die "nginx auth_request to portcullis does not pass the identity on"
  s_none=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$FA_GW_PORT/canary")
  [ "$s_none" = 401 ] || die "nginx auth_request to portcullis let a request without a session through ($s_none)"
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$FA_STATIC_PORT/")" = 200 ] ||
    die "nginx auth_request to the static 202 does not answer 200"
  FORWARD_AUTH=yes
  log "verified: nginx auth_request to portcullis -> 200 with identity with the session, 401 without"
else
  FORWARD_AUTH_SKIPPED="the gateway answers /oauth2/auth with $fa_session with a session and $fa_none without (not 202 and 401)"
  log "skipping the forward-auth rows: $FORWARD_AUTH_SKIPPED"
fi

# Apache with mod_auth_openidc: its own login, then the same checks.
APACHE_ON=""
wait_apache() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$AP_PORT") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
apache_login() { COOKIE_APACHE=$(login_once "http://127.0.0.1:$AP_PORT"); [ -n "$COOKIE_APACHE" ]; }
if ! wait_apache; then
  APACHE_SKIPPED="Apache did not start: $(tail -3 "$WORK/apache/error.log" | tr '\n' ' ')"
elif ! apache_login; then
  APACHE_SKIPPED="the login through mod_auth_openidc failed: $(tail -3 "$WORK/apache/error.log" | tr '\n' ' ')"
elif [[ $(canary "http://127.0.0.1:$AP_PORT" "$COOKIE_APACHE") != user=?* ]]; then
  APACHE_SKIPPED="the mod_auth_openidc session does not authenticate or passes no identity"
elif [ "$(curl -s -o /dev/null -w '%{http_code}' -H 'Accept: text/html' "http://127.0.0.1:$AP_PORT/canary")" != 302 ]; then
  APACHE_SKIPPED="mod_auth_openidc does not send a request without a session to log in"
else
  APACHE_ON=yes
  log "verified: mod_auth_openidc session -> 200 with identity at the upstream; no session -> 302"
fi
[ -n "$APACHE_ON" ] || log "skipping the Apache rows: $APACHE_SKIPPED"

# --- variants and rows -----------------------------------------------------------------------------
# A variant: where it listens, the processes whose CPU and memory are its own, the session it sends.
declare -A URL PROCS CK LABEL
variant() { URL[$1]=$2; PROCS[$1]=$3; CK[$1]=$4; LABEL[$1]=$5; }
variant direct "http://127.0.0.1:$UP_PORT/" "" "$COOKIE" "(a) upstream direct"
variant nginx "http://127.0.0.1:$NGX_PORT/" "$NGX_PID" "$COOKIE" "(b) nginx proxy, no auth"
variant portcullis "http://127.0.0.1:$GW_PORT/" "$GW_PID" "$COOKIE" "(c) portcullis, session"
variant redis "http://127.0.0.1:$GWR_PORT/" "$GWR_PID" "$COOKIE_REDIS" "(d) portcullis, session in Redis"
variant nginx-h2 "http://127.0.0.1:$NGX_H2_PORT/" "$NGX_PID" "$COOKIE" "(b) nginx proxy, no auth"
variant portcullis-h2 "http://127.0.0.1:$GW_PORT/" "$GW_PID" "$COOKIE" "(c) portcullis, session"
variant fa-static "http://127.0.0.1:$FA_STATIC_PORT/" "$NGXFA_PID $AUTH202_PID" "$COOKIE" \
  "(e) nginx auth_request to a static 202"
variant fa-portcullis "http://127.0.0.1:$FA_GW_PORT/" "$NGXFA_PID $GWFA_PID" "$COOKIE" \
  "(f) nginx auth_request to portcullis"
# Apache's session is renewed each round (apache_login), so its cookie is read when a row starts.
variant apache "http://127.0.0.1:$AP_PORT/" "$AP_PID" "" "(g) Apache mod_auth_openidc, session"
variant floor "http://127.0.0.1:$FLOOR_PORT/" "$FLOOR_PID" "$COOKIE" "(h) floor: bytes forwarded, nothing checked"

# A row: variant and shape (c<N>: wrk -t1 -c<N>; h2: h2load -c$H2_CLIENTS -m$H2_STREAMS). Each round
# runs every row once, in this order.
ROWS=("direct c50" "nginx c50" "portcullis c50" "redis c50" "floor c50")
[ -n "$APACHE_ON" ] && ROWS+=("apache c50")
ROWS+=("direct c1" "nginx c1" "portcullis c1" "redis c1")
ROWS+=("nginx c$WIDE" "portcullis c$WIDE" "redis c$WIDE")
ROWS+=("nginx-h2 h2" "portcullis-h2 h2")
[ -n "$FORWARD_AUTH" ] && ROWS+=("fa-static c50" "fa-portcullis c50")

# Redis commands processed, for the calls per proxied request.
redis_calls() { redis-cli -p "$REDIS_PORT" info stats | awk -F: '/^total_commands_processed/ {print $2 + 0}'; }
REDIS_CALLS=0; REDIS_REQUESTS=0
# Samples per row, one per round, space-separated.
declare -A RPS P50 P99 CPU PEAK SETTLED ERRORS IDLE

to_us() { # wrk latency such as 812.00us, 1.23ms, 1.01s -> microseconds
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
    if (u == "us") f = 1; else if (u == "ms") f = 1000; else if (u == "s") f = 1000000; else f = 1;
    printf "%.0f", n * f }'
}

# Runs wrk; sets requests, rps, p50, p99 (us), errors and error_detail.
load_wrk() { # variant connections
  local out
  out=$(taskset -c "$CLIENT_CPU" timeout "$LIMIT" wrk -t1 -c"$2" -d"$DURATION" --latency \
    -H "Cookie: ${CK[$1]}" -H 'Accept: text/html' "${URL[$1]}")
  requests=$(echo "$out" | awk '/requests in/ {print $1}')
  rps=$(echo "$out" | awk '/^Requests\/sec/ {print $2}')
  p50=$(to_us "$(echo "$out" | awk '$1 == "50%" {print $2}')")
  p99=$(to_us "$(echo "$out" | awk '$1 == "99%" {print $2}')")
  local non2xx socket
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
  socket=$(echo "$out" | awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}')
  errors=$((${non2xx:-0} + ${socket:-0}))
  error_detail="non-2xx ${non2xx:-0}; $(echo "$out" | awk '/Socket errors/ {sub(/^ */, ""); print}')"
  # Most answers refused: the session no longer authenticates, and the figures would mean nothing.
  [ "${non2xx:-0}" -le $((requests / 2)) ] || die "$1: $non2xx of $requests answers were not 2xx: $out"
}

# Runs h2load over HTTP/2 cleartext with prior knowledge; sets the same. h2load prints no
# percentiles, so they come from its per-request log (start, status, microseconds to the response's end).
load_h2() { # variant
  local out
  out=$(taskset -c "$CLIENT_CPU" timeout "$LIMIT" h2load -t1 -c"$H2_CLIENTS" -m"$H2_STREAMS" -D "$DURATION" \
    --log-file="$WORK/h2load.log" -H "Cookie: ${CK[$1]}" -H 'Accept: text/html' "${URL[$1]}")
  echo "$out" | grep -q 'Application protocol: h2c' || die "$1: h2load did not speak h2c: $out"
  rps=$(echo "$out" | awk '/^finished in/ {print $4}')
  requests=$(echo "$out" | awk '/^requests:/ {print $6}')
  # Non-2xx answers, timeouts, and streams that failed; not the requests still in flight when the
  # duration ended (started but not done), which h2load counts as errored.
  errors=$(echo "$out" | awk '
    /^requests:/ {e += $14 + $12 - ($4 - $6)} /^status codes:/ {e += $5 + $7 + $9} END {print (e > 0 ? e : 0)}')
  error_detail=$(echo "$out" | grep -E '^(requests|status codes):' | tr '\n' ' ')
  [ "$errors" -le $((requests / 2)) ] || die "$1: $errors of $requests requests failed or were not 2xx: $out"
  read -r p50 p99 < <(awk -F'\t' '{print $3}' "$WORK/h2load.log" | sort -n |
    awk '{v[NR] = $1} END {if (NR == 0) print "- -"; else print v[int((NR - 1) * 0.50) + 1], v[int((NR - 1) * 0.99) + 1]}')
}

run_row() { # "variant shape"
  local row=$1 v=${1% *} shape=${1#* } pids before after calls_before
  pids=$(proc_tree ${PROCS[$v]})
  [ "$v" = apache ] && CK[apache]=$COOKIE_APACHE
  calls_before=$(redis_calls)
  reset_peak $pids
  before=$(cpu_ticks $pids)
  case $shape in
    h2) load_h2 "$v" ;;
    c*) load_wrk "$v" "${shape#c}" ;;
  esac
  pids=$(proc_tree ${PROCS[$v]})
  after=$(cpu_ticks $pids)
  if [ "$v" = redis ]; then
    # The INFO that reads the counter counts itself: one per reading.
    REDIS_CALLS=$((REDIS_CALLS + $(redis_calls) - calls_before - 1))
    REDIS_REQUESTS=$((REDIS_REQUESTS + requests))
  fi
  RPS[$row]+="$rps "; P50[$row]+="$p50 "; P99[$row]+="$p99 "; ERRORS[$row]+="$errors "
  if [ -n "$pids" ]; then
    CPU[$row]+="$(awk -v t=$((after - before)) -v n="$requests" -v hz="$CLK_TCK" 'BEGIN {printf "%.2f", t / hz / n * 1e6}') "
    PEAK[$row]+="$(mem_kb VmHWM $pids) "
    if [ "$shape" = "c$WIDE" ]; then
      sleep "$SETTLE"
      SETTLED[$row]+="$(mem_kb VmRSS $pids) "
    fi
  fi
  log "$row: $rps req/s, p99 $p99 us, $errors errors, cpu $((after - before)) ticks for $requests requests"
  [ "$errors" = 0 ] || log "$row: errors: $error_detail"
}

# Logins through gateway $2 for the login row $1; CPU of the processes in $3.
declare -A LOGIN_RATE LOGIN_CPU LOGIN_DONE
run_logins() { # name url root-pid
  local pids before after out count
  pids=$(proc_tree $3)
  before=$(cpu_ticks $pids)
  out=$(taskset -c "$CLIENT_CPU" timeout 150 "$HELPER" login "$2" /canary "$LOGINS" "$LOGIN_CONCURRENCY" 120)
  pids=$(proc_tree $3)
  after=$(cpu_ticks $pids)
  count=$(echo "$out" | sed -n 's/^logins=\([0-9]*\).*/\1/p')
  LOGIN_DONE[$1]+="$count "
  LOGIN_RATE[$1]+="$(echo "$out" | sed -n 's/.*logins_per_sec=\([0-9.]*\).*/\1/p') "
  LOGIN_CPU[$1]+="$(awk -v t=$((after - before)) -v n="$count" -v hz="$CLK_TCK" 'BEGIN {printf "%.0f", t / hz / n * 1e6}') "
  log "$1: $(echo "$out" | tail -1), cpu $((after - before)) ticks"
}

# Idle: started, one session each, no load yet.
for v in nginx portcullis redis; do
  IDLE[$v]=$(mem_kb VmRSS $(proc_tree ${PROCS[$v]}))
done
log "warming up"
for row in "${ROWS[@]}"; do
  v=${row% *}
  case $row in
    *" c1"|*" c$WIDE") ;;
    *" h2") taskset -c "$CLIENT_CPU" timeout 30 h2load -t1 -c"$H2_CLIENTS" -m"$H2_STREAMS" -D 1 \
      -H "Cookie: ${CK[$v]}" "${URL[$v]}" >/dev/null ;;
    *) [ "$v" = apache ] && CK[apache]=$COOKIE_APACHE
      taskset -c "$CLIENT_CPU" timeout 30 wrk -t1 -c50 -d2s -H "Cookie: ${CK[$v]}" "${URL[$v]}" >/dev/null ;;
  esac
done
for round in $(seq 1 "$ROUNDS"); do
  log "round $round of $ROUNDS"
  for row in "${ROWS[@]}"; do run_row "$row"; done
  run_logins portcullis "http://127.0.0.1:$GW_PORT" "$GW_PID"
  if [ -n "$APACHE_ON" ]; then
    run_logins apache "http://127.0.0.1:$AP_PORT" "$AP_PID"
    # Its shared-memory cache is bounded (OIDCCacheShmMax, 500 entries by default): the logins may
    # have evicted the session the next round uses.
    apache_login || die "the login through mod_auth_openidc failed after round $round"
  fi
done

# --- report -----------------------------------------------------------------------------------------
# Over one sample per round: the median, and "median (min-max)".
median() { printf '%s\n' $1 | sort -g | awk '{a[NR] = $1} END {if (NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%g\n", (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
spread() { # samples [scale]: median (min-max), each divided by scale, at most 3 significant decimals
  [ -n "${1// /}" ] || { echo "-"; return; }
  printf '%s\n' $1 | sort -g | awk -v s="${2:-1}" '
    function f(x) { x /= s; return x >= 100 ? sprintf("%.0f", x) : (x >= 10 ? sprintf("%.1f", x) : sprintf("%.2f", x)) }
    {a[NR] = $1} END {
      m = NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
      if (NR == 1) print f(m); else printf "%s (%s-%s)\n", f(m), f(a[1]), f(a[NR]) }'
}
# Three decimals, so that a target is never met by rounding (0.899 is not 0.9).
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.3f", a / b}'; }
# ratio of the medians of two rows' samples
mratio() { ratio "$(median "$1")" "$(median "$2")"; }
mib() { spread "$1" 1024; }
# The sum over the rounds.
total() { awk -v s="$1" 'BEGIN {n = split(s, a, " "); t = 0; for (i = 1; i <= n; i++) t += a[i]; print t}'; }

echo
echo "Medians of $ROUNDS alternating rounds, (min-max) over the rounds; $DURATION per measurement; servers on"
echo "CPU $SERVER_CPU, load generators on CPU $CLIENT_CPU; every request carries the session cookie (portcullis"
echo "decrypts and checks it, then proxies). CPU per request: the target's own processes (forward-auth: nginx and"
echo "the auth service). Peak RSS: the highest RSS during the measurement (nginx: master and worker; Apache:"
echo "all its processes), memory a process kept from earlier rows included."
echo
echo "| target | shape | req/s | p50 (us) | p99 (us) | CPU per request (us) | peak RSS (MiB) | errors (all rounds) |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
for row in "${ROWS[@]}"; do
  v=${row% *}; shape=${row#* }
  case $shape in
    h2) shape="h2load -c$H2_CLIENTS -m$H2_STREAMS" ;;
    *) shape="wrk -${shape}" ;;
  esac
  echo "| ${LABEL[$v]} | $shape | $(spread "${RPS[$row]}") | $(spread "${P50[$row]}") | $(spread "${P99[$row]}") \
| $(spread "${CPU[$row]:-}") | $(mib "${PEAK[$row]:-}") | $(total "${ERRORS[$row]}") |"
done
echo
echo "Memory at $WIDE connections (MiB): idle is before any load; peak during the wrk -c$WIDE run; settled $SETTLE s after it."
echo
echo "| target | idle RSS | peak RSS at c$WIDE | settled RSS |"
echo "|---|---:|---:|---:|"
for v in nginx portcullis redis; do
  echo "| ${LABEL[$v]} | $(mib "${IDLE[$v]}") | $(mib "${PEAK[$v c$WIDE]}") | $(mib "${SETTLED[$v c$WIDE]}") |"
done
echo
echo "Redis commands per proxied request (d), all rounds: $(awk -v a="$REDIS_CALLS" -v b="$REDIS_REQUESTS" 'BEGIN {if (b == 0) print "-"; else printf "%.5f (%d commands, %d requests)", a / b, a, b}')"
echo
echo "| logins ($LOGINS per round, $LOGIN_CONCURRENCY at a time, same provider) | logins/s | gateway CPU per login (us, provider excluded) |"
echo "|---|---:|---:|"
echo "| portcullis | $(spread "${LOGIN_RATE[portcullis]}") | $(spread "${LOGIN_CPU[portcullis]}") |"
if [ -n "$APACHE_ON" ]; then
  echo "| Apache mod_auth_openidc (all its processes) | $(spread "${LOGIN_RATE[apache]}") | $(spread "${LOGIN_CPU[apache]}") |"
  evicted=$(grep -c 'dropping LRU entry' "$WORK/apache/error.log" || true)
  echo
  echo "mod_auth_openidc's shared-memory cache (OIDCCacheShmMax ${APACHE_SHM_MAX:-500, its default}) dropped $evicted entries younger than an hour."
fi
echo
[ -n "$FORWARD_AUTH" ] || echo "Forward-auth rows skipped: $FORWARD_AUTH_SKIPPED."
[ -n "$APACHE_ON" ] || echo "Apache rows skipped: $APACHE_SKIPPED."
[ -n "$FORWARD_AUTH" ] && [ -n "$APACHE_ON" ] || echo

# The performance targets, from the medians above.
check() { # figure, value, comparison (ge|le), target
  local met
  met=$(awk -v v="$2" -v t="$4" -v op="$3" 'BEGIN {
    if (v == "-" || v == "") print "-"; else if (op == "ge") print (v + 0 >= t ? "yes" : "no"); else print (v + 0 <= t ? "yes" : "no") }')
  echo "| $1 | $2 | $([ "$3" = ge ] && echo '>=' || echo '<=') $4 | $met |"
}
echo "| target (ratios of medians) | measured | wanted | met |"
echo "|---|---:|---:|---|"
for c in 50 "$WIDE"; do
  check "c$c req/s, portcullis / nginx" "$(mratio "${RPS[portcullis c$c]}" "${RPS[nginx c$c]}")" ge 1.1
  check "c$c p99, portcullis / nginx" "$(mratio "${P99[portcullis c$c]}" "${P99[nginx c$c]}")" le 1.0
  check "c$c CPU per request, portcullis / nginx" "$(mratio "${CPU[portcullis c$c]}" "${CPU[nginx c$c]}")" le 0.9
  check "c$c errors, portcullis (all rounds)" "$(total "${ERRORS[portcullis c$c]}")" le 0
done
check "c$WIDE peak RSS, portcullis / nginx" "$(mratio "${PEAK[portcullis c$WIDE]}" "${PEAK[nginx c$WIDE]}")" le 1.5
check "c$WIDE settled RSS / idle RSS, portcullis (\"back near idle\", read as 1.5)" \
  "$(ratio "$(median "${SETTLED[portcullis c$WIDE]}")" "${IDLE[portcullis]}")" le 1.5
check "HTTP/2 req/s, portcullis / nginx" "$(mratio "${RPS[portcullis-h2 h2]}" "${RPS[nginx-h2 h2]}")" ge 1.0
check "HTTP/2 p99, portcullis / nginx" "$(mratio "${P99[portcullis-h2 h2]}" "${P99[nginx-h2 h2]}")" le 1.0
check "Redis store req/s / cookie store, c50" "$(mratio "${RPS[redis c50]}" "${RPS[portcullis c50]}")" ge 0.9
if [ -n "$FORWARD_AUTH" ]; then
  check "forward-auth req/s, portcullis / static 202" "$(mratio "${RPS[fa-portcullis c50]}" "${RPS[fa-static c50]}")" ge 0.9
fi
check "gateway CPU per login (ms), portcullis" "$(awk -v u="$(median "${LOGIN_CPU[portcullis]}")" 'BEGIN {printf "%.3f", u / 1000}')" le 0.25
if [ -n "$APACHE_ON" ]; then
  check "logins/s, portcullis / mod_auth_openidc" "$(mratio "${LOGIN_RATE[portcullis]}" "${LOGIN_RATE[apache]}")" ge 2
  check "c50 proxied req/s, portcullis / mod_auth_openidc" "$(mratio "${RPS[portcullis c50]}" "${RPS[apache c50]}")" ge 5
fi
# The floor is no target: it shows what forwarding the bytes alone costs a tokio program here.
echo
echo "The floor (h) beside nginx at c50: req/s $(mratio "${RPS[floor c50]}" "${RPS[nginx c50]}"), CPU per request \
$(mratio "${CPU[floor c50]}" "${CPU[nginx c50]}"); portcullis's CPU per request is $(mratio "${CPU[portcullis c50]}" "${CPU[floor c50]}") times the floor's."
echo
echo "Raw samples (req/s): $(for row in "${ROWS[@]}"; do printf '%s: %s; ' "$row" "${RPS[$row]}"; done)"
