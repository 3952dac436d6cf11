#!/usr/bin/env bash
# The style gate CI holds before the tests: formatting, clippy with warnings
# as errors, crate boundaries, and known advisories against Cargo.lock.
#
# Advisories need RustSec's advisory database. It is read from
# $ADVISORY_DB, else from ~/.cargo/advisory-db (cargo-audit's own place,
# cloned there when GitHub is reachable). Where neither exists the check says
# so loudly and is skipped rather than failing every build of a machine
# without GitHub; any advisory found in a database that is there fails.
set -euo pipefail
cd "$(dirname "$0")/../.."

echo "lint: cargo fmt --check"
cargo fmt --all -- --check

echo "lint: cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "lint: crate boundaries"
# Crate boundaries: arrows only point down.
# The job handlers know neither the settings nor the catalog file (the
# composition root is kiebot-app), and a default kiebot build links no fakes.
if cargo tree -e normal -p kiebot-worker | grep -E 'kiebot-(config|catalog|app|testkit) '; then
    echo "kiebot-worker must not depend on the crates above" >&2; exit 1
fi
for bin in kiebot kiebot-bot-bin kiebot-worker-bin; do
    if cargo tree -e normal -p "$bin" | grep 'kiebot-testkit '; then
        echo "$bin must not link kiebot-testkit by default (the demo is a feature)" >&2; exit 1
    fi
done

if ! cargo audit --version >/dev/null 2>&1; then
    echo "lint: installing cargo-audit from crates.io"
    cargo install --locked --quiet cargo-audit
fi
db="${ADVISORY_DB:-$HOME/.cargo/advisory-db}"
if [ ! -d "$db/crates" ]; then
    timeout 120 git clone --quiet --depth 1 https://github.com/rustsec/advisory-db.git "$db" 2>/dev/null \
        || rm -rf "$db"
fi
if [ -d "$db/crates" ]; then
    echo "lint: cargo audit (advisory database at $db, $(git -C "$db" log -1 --format=%cs 2>/dev/null || echo 'date unknown'))"
    cargo audit --no-fetch --db "$db" --deny warnings
else
    echo "lint: WARNING: no RustSec advisory database (set ADVISORY_DB or let this machine reach github.com); advisories NOT checked" >&2
fi
