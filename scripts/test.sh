#!/usr/bin/env bash
# Set up everything the test suites need on a fresh machine, then run them all.
# This is the README's test command; CI (.ci/run) runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== what the interoperability and browser suites need"
# Headless Chromium for the browser suite (tests/integration/browser_e2e.rs). When it cannot be
# installed the run stops here: the browser tests must fail, never pass without a browser.
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" -eq 0 ]; then apt_get=(apt-get); else apt_get=(sudo apt-get); fi
  "${apt_get[@]}" update
  DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install -y chromium
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

echo "== formatting and lints"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

echo "== dependencies: advisories, licenses, duplicate versions, sources (cargo deny, deny.toml)"
if ! command -v cargo-deny >/dev/null 2>&1; then
  cargo install cargo-deny --locked
fi
# The advisory database is a git repository on GitHub. When it cannot be fetched, the other checks
# still run, and the run says loudly that advisories were not checked; under CI (CI set) that fails
# the run. A copy fetched earlier is used (its age shown), never passed off as current.
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
  if [ -n "${CI:-}" ]; then
    echo "!!!!!!!!!! failing: CI must check advisories against the current database" >&2
    exit 1
  fi
fi

echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast
else
  cargo test --locked --no-fail-fast
fi
