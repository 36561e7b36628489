#!/usr/bin/env bash
# The whole test suite: rustfmt and clippy (warnings are errors), unit tests, integration tests against real servers
# (Postgres pairs and the other lab components, started on free ports in temp
# dirs and torn down), the alert-rule tests, and a short smoke run of every
# benchmark mode. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
# rustup puts cargo here on a fresh machine.
if ! command -v cargo >/dev/null && [ -f "$HOME/.cargo/env" ]; then
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi

# Style and lints first: they fail in seconds, the suite takes minutes.
cargo fmt --all --check
cargo clippy --locked --workspace --all-targets -- -D warnings

# The integration tests mostly wait on real servers, so more threads than
# cores is fine; RPO_TEST_THREADS overrides.
threads="${RPO_TEST_THREADS:-4}"
cargo test --locked --workspace --all-targets -- --test-threads="$threads"

# Every benchmark mode, briefly: a broken benchmark fails CI too.
scripts/bench-smoke.sh
