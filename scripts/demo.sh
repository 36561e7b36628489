#!/usr/bin/env bash
# The demo: installs what it needs, builds, then starts a real Postgres primary
# with a streaming replica (and a light writer), runs rpo-exporter watching it,
# prints the `check` table and the URLs, and stops everything on Ctrl-C.
#   scripts/demo.sh [--once] [--listen 127.0.0.1:9798]
#   scripts/demo.sh --drill [--report DIR]   # a failover drill on the lab: promotes the
#                                            # Postgres, MariaDB and Redis replicas, prints the report's summary
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
if ! command -v cargo >/dev/null && [ -f "$HOME/.cargo/env" ]; then
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi

cargo build --locked --workspace --bins
exec target/debug/rpo-lab "$@"
