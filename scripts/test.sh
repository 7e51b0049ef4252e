#!/usr/bin/env bash
# Set up everything the test suites need on a fresh machine, then run them all.
# This is the README's test command; CI (.ci/run) runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ]; then apt_get=(apt-get); sudo=(); else apt_get=(sudo apt-get); sudo=(sudo); fi
apt_updated=
# Install Debian packages without starting the services they bring (nginx would take port 80).
apt_install() {
  [ -n "$apt_updated" ] || { "${apt_get[@]}" update; apt_updated=1; }
  local policy=/usr/sbin/policy-rc.d added=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 755 "$policy"
    added=1
  fi
  DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install -y "$@"
  if [ -n "$added" ]; then "${sudo[@]}" rm -f "$policy"; fi
}

echo "== what the interoperability and browser suites need"
# Headless Chromium for the browser suite (tests/integration/browser_e2e.rs). When it cannot be
# installed the run stops here: the browser tests must fail, never pass without a browser.
if [ ! -x /usr/bin/chromium ]; then
  apt_install chromium
fi
/usr/bin/chromium --version 2>/dev/null
# Node.js runs oidc-provider and playwright-core (pinned in tests/e2e/package-lock.json).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "Node.js and npm are required (Node 20 or later)" >&2
  exit 1
fi
# npm ci (which always starts from scratch) only when the lock file is newer than the last install.
if ! [ tests/e2e/node_modules/.installed -nt tests/e2e/package-lock.json ]; then
  (cd tests/e2e && npm ci --no-audit --no-fund && touch node_modules/.installed)
fi

echo "== what the Redis store's tests need"
# tests/integration/redis.rs starts its own redis-server processes (standalone, TLS, sentinels, a
# cluster) on loopback; redis-cli sets up the cluster. Debian's package, its service never started.
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
  apt_install redis-server redis-tools
fi
redis-server --version

echo "== what the deploy/ checks need"
# tests/integration/deploy.rs: nginx (nginx -t, and a real nginx in front of a stand-in gateway) and
# systemd-analyze (verify, security) from Debian; kubernetes-validate, yamllint and PyYAML in a
# virtual environment, with prometheus-client, whose OpenMetrics parser reads /metrics in
# tests/integration/telemetry.rs. kubectl (kustomize) is used when present; Debian does not carry it.
deploy_packages=()
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || deploy_packages+=(nginx)
command -v systemd-analyze >/dev/null 2>&1 || deploy_packages+=(systemd)
python3 -c 'import ensurepip' >/dev/null 2>&1 || deploy_packages+=(python3-venv)
if [ ${#deploy_packages[@]} -gt 0 ]; then
  apt_install "${deploy_packages[@]}"
fi
venv=target/deploy-venv
if ! [ "$venv/.installed" -nt tests/deploy/requirements.txt ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/deploy/requirements.txt
  touch "$venv/.installed"
fi
"$venv/bin/python" -m pip list --disable-pip-version-check 2>/dev/null \
  | grep -Ei '^(kubernetes-validate|yamllint|pyyaml|prometheus[-_]client) '
nginx -v 2>&1 || /usr/sbin/nginx -v
systemd-analyze --version | head -n 1

echo "== what the Asgardeo guide's test needs"
# tests/integration/deploy.rs runs the README's Asgardeo configuration with accounts.asgardeo.io and
# api.asgardeo.io mapped to loopback, inside a user, network and mount namespace: unshare
# (util-linux) and ip (iproute2), and unprivileged user namespaces. Without them that test fails.
command -v ip >/dev/null 2>&1 || apt_install iproute2
if ! unshare --user --map-root-user --net --mount true 2>/dev/null; then
  echo "!!!!!!!!!! unshare cannot create user namespaces here: the Asgardeo test will fail" >&2
fi

echo "== formatting and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== the shipped binary"
# The development provider's misbehaviour switches exist only where tests turn them on: in a build of
# the gateway that is not a test (normal and build dependencies only), the feature must be off.
shipped=$(cargo tree --locked -p portcullis -e normal,build,features --prefix none)
if grep -q 'devidp feature "misbehavior"' <<<"$shipped"; then
  echo "the shipped binary would carry the development provider's misbehaviour switches" >&2
  exit 1
fi
grep -q '^devidp v' <<<"$shipped" || { echo "cargo tree did not list devidp: the check above proves nothing" >&2; exit 1; }
echo "devidp without the misbehavior feature"

echo "== dependencies: advisories, licenses, duplicate versions, sources (cargo deny, deny.toml)"
if ! command -v cargo-deny >/dev/null 2>&1; then
  cargo install cargo-deny --locked
fi
# The advisory database is a git repository on GitHub. When it cannot be fetched, the other checks
# still run, and the run says loudly that the database is not current. A copy fetched earlier is used
# (its date shown), never passed off as current. Machines whose only network is the package registries
# (CI among them) cannot reach GitHub, so this is a warning, not a failure; a copy of any age still catches
# every advisory it holds.
mkdir -p target
if cargo deny fetch db >target/deny-fetch.log 2>&1; then
  cargo deny --offline check advisories bans licenses sources
else
  db=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/advisory-dbs/advisory-db-* 2>/dev/null | head -1 || true)
  echo "!!!!!!!!!! ADVISORIES: the RustSec advisory database could not be fetched:" >&2
  grep -E 'fatal|error|ERROR' target/deny-fetch.log | tail -2 >&2 || true
  if [ -n "$db" ] && git -C "$db" log -1 >/dev/null 2>&1; then
    echo "!!!!!!!!!! checking against an earlier copy, last changed $(git -C "$db" log -1 --format=%cs)" >&2
    cargo deny --offline check advisories bans licenses sources
  else
    echo "!!!!!!!!!! ADVISORIES NOT CHECKED (no copy of the database on this machine)" >&2
    cargo deny --offline check bans licenses sources
  fi
fi

echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
