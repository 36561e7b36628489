#!/usr/bin/env bash
# A short run of every benchmark mode with the debug build, so that a broken
# benchmark fails CI (scripts/test.sh runs it last). The figures of a debug
# build on a busy machine mean nothing and nothing is compared: each mode
# must only run to its end and exit 0. Real figures: README, "Benchmarks".
set -euo pipefail
cd "$(dirname "$0")/.."

# `cargo test --workspace --all-targets` builds the rpo-exporter binary (its
# integration tests run it) but builds rpo-bench only as a test harness:
# this links the rpo-bench binary from what the test build compiled.
cargo build --locked --workspace --bins
bench="${CARGO_TARGET_DIR:-target}/debug/rpo-bench"

run() {
  echo "bench smoke: rpo-bench $*" >&2
  local started=$SECONDS
  # A hung benchmark fails CI instead of stalling it.
  timeout --kill-after=10 300 "$bench" "$@"
  echo "bench smoke: rpo-bench $* passed in $((SECONDS - started)) s" >&2
}

# The render path at small store sizes.
run --targets 10,50 --requests 20
# The real binary on a lab Postgres pair, briefly.
run --daemon --seconds 3
# The real binary watching 20 Redis pair targets, polling every second.
run --scale --targets 20 --interval-ms 1000 --seconds 3 --requests 20
# Where a target's memory goes, at 100 targets (a few seconds: a lab Redis
# pair for one real poll, then everything in-process).
run --memory --targets 100
# --aws-cost is not cheap: a fixed 15 s settle, then the batching check's
# 10,000 series take the emulator about a minute. RPO_BENCH_SMOKE_AWS=1 runs it.
if [ "${RPO_BENCH_SMOKE_AWS:-0}" = 1 ]; then
  run --aws-cost --seconds 1
else
  echo "bench smoke: rpo-bench --aws-cost skipped: about 80 s; RPO_BENCH_SMOKE_AWS=1 runs it" >&2
fi
# The peers come only with `scripts/install-deps.sh --bench`.
if command -v prometheus-postgres-exporter >/dev/null &&
  command -v prometheus-redis-exporter >/dev/null; then
  run --peers --targets 2 --seconds 3 --requests 20
else
  echo "bench smoke: rpo-bench --peers skipped: postgres_exporter and redis_exporter are not installed (scripts/install-deps.sh --bench)" >&2
fi
