#!/usr/bin/env bash
# Installs what rpo-exporter's tests, lab and demo need on a Debian/Ubuntu
# machine: PostgreSQL (server + psql), MariaDB (server + client), Redis,
# RabbitMQ, Prometheus (promtool), Alertmanager, curl, CA certificates,
# python3-venv, a C toolchain, Chromium (the board is tested in a real
# headless browser), openssl (the Redis TLS lab makes its own CA), libfaketime
# (the clock tests run Postgres servers and the exporter itself with a faked
# clock), moto in a venv (the AWS emulator) and Rust.
#
# Idempotent: every component is checked by its binary first; apt-get runs
# (with a single `apt-get update`) only if something is missing.
# Run as root, or as a user with sudo.
#
# With --bench it also installs what only the peer benchmark needs (not the
# tests): postgres_exporter and redis_exporter (Debian packages
# prometheus-postgres-exporter, prometheus-redis-exporter), which
# `rpo-bench --peers` runs beside rpo-exporter.
#
# Usage: scripts/install-deps.sh [--check] [--bench]
#   --check   only report what is present or missing; exit 1 if anything is missing
#   --bench   also the benchmark's peers (postgres_exporter, redis_exporter)
set -euo pipefail

check_only=0
bench=0
for arg in "$@"; do
  case "$arg" in
    --check) check_only=1 ;;
    --bench) bench=1 ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

# System binaries such as rabbitmq-server live in sbin, which a non-root PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

# Highest-versioned PostgreSQL bin dir that has initdb, or nothing.
pg_bin_dir() {
  local initdb
  initdb=$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$initdb" ] && dirname "$initdb"
}

# "(path)" of a command on PATH, or exit 1.
cmd_at() {
  local p
  p=$(command -v "$1") || return 1
  echo "($p)"
}

# find_component NAME -> prints where it is (exit 0) or nothing (exit 1).
find_component() {
  local dir
  case "$1" in
    postgres)
      dir=$(pg_bin_dir) || return 1
      [ -n "$dir" ] || return 1
      echo "$(basename "$(dirname "$dir")") ($dir)" ;;
    psql) cmd_at psql ;;
    # The lab runs its own mariadbd (made by mariadb-install-db, queried with mariadb).
    mariadb) command -v mariadb-install-db >/dev/null && command -v mariadb >/dev/null \
      && cmd_at mariadbd ;;
    redis) cmd_at redis-server ;;
    rabbitmq) cmd_at rabbitmq-server ;;
    promtool) cmd_at promtool ;;
    alertmanager) cmd_at prometheus-alertmanager || cmd_at alertmanager ;;
    curl) cmd_at curl ;;
    ca-certificates) [ -s /etc/ssl/certs/ca-certificates.crt ] && echo "(/etc/ssl/certs/ca-certificates.crt)" ;;
    python3-venv)
      # `python3 -m venv` needs ensurepip, which Debian ships in python3-venv.
      command -v python3 >/dev/null && python3 -c 'import venv, ensurepip' 2>/dev/null \
        && cmd_at python3 ;;
    cc) cmd_at cc ;;
    chromium) cmd_at chromium ;;
    openssl) cmd_at openssl ;;
    libfaketime)
      # The same places rpo_lab::faketime looks in.
      dir=$( (ls -d /usr/lib/*/faketime/libfaketimeMT.so.1 /usr/lib/faketime/libfaketimeMT.so.1 2>/dev/null || true) | head -n 1)
      [ -n "$dir" ] && echo "($(dirname "$dir"))" ;;
    # The benchmark's peers (--bench); Debian installs them under these names.
    postgres_exporter) cmd_at prometheus-postgres-exporter ;;
    redis_exporter) cmd_at prometheus-redis-exporter ;;
    *) return 1 ;;
  esac
}

# Debian package that provides each component.
package_of() {
  case "$1" in
    postgres) echo postgresql ;;
    psql) echo postgresql-client ;;
    mariadb) echo mariadb-server ;;
    redis) echo redis-server ;;
    rabbitmq) echo rabbitmq-server ;;
    promtool) echo prometheus ;;
    alertmanager) echo prometheus-alertmanager ;;
    curl) echo curl ;;
    ca-certificates) echo ca-certificates ;;
    python3-venv) echo python3-venv ;;
    cc) echo build-essential ;;
    chromium) echo chromium ;;
    openssl) echo openssl ;;
    libfaketime) echo libfaketime ;;
    postgres_exporter) echo prometheus-postgres-exporter ;;
    redis_exporter) echo prometheus-redis-exporter ;;
  esac
}

components="postgres psql mariadb redis rabbitmq promtool alertmanager curl ca-certificates python3-venv cc chromium openssl libfaketime"
if [ "$bench" -eq 1 ]; then
  components="$components postgres_exporter redis_exporter"
fi

missing_components=""
missing_packages=""
for c in $components; do
  if ! find_component "$c" >/dev/null 2>&1; then
    missing_components="$missing_components $c"
    missing_packages="$missing_packages $(package_of "$c")"
  fi
done

if [ -n "$missing_packages" ] && [ "$check_only" -eq 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
  elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "missing:$missing_components; need root or sudo to install:$missing_packages" >&2
    exit 1
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "missing:$missing_components; no apt-get here: install$missing_packages by hand" >&2
    exit 1
  fi
  echo "installing:$missing_packages"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
  # shellcheck disable=SC2086 # word splitting of the package list is intended
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing_packages
  # Debian's postgresql and mariadb-server packages create and may start a
  # system instance (ports 5432, 3306); the lab never touches them. The
  # exporter packages (--bench) may likewise start a system service (ports
  # 9187, 9121); the benchmark runs its own instances on free ports.
fi

status=0
for c in $components; do
  if where=$(find_component "$c" 2>/dev/null); then
    echo "ok $c $where"
  else
    echo "MISSING $c (Debian package $(package_of "$c"))"
    status=1
  fi
done

# Rust toolchain.
if [ -x "$HOME/.cargo/bin/cargo" ] && ! command -v cargo >/dev/null 2>&1; then
  export PATH="$HOME/.cargo/bin:$PATH"
  need_env_hint=1
else
  need_env_hint=0
fi
if ! command -v cargo >/dev/null 2>&1; then
  if [ "$check_only" -eq 1 ]; then
    echo "MISSING cargo (rustup)"
    status=1
  else
    echo "installing: Rust (rustup, minimal profile)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    export PATH="$HOME/.cargo/bin:$PATH"
    need_env_hint=1
  fi
fi
# The test suite runs rustfmt and clippy; rustup's minimal profile has neither.
if command -v cargo >/dev/null 2>&1 && command -v rustup >/dev/null 2>&1 \
  && ! { cargo fmt --version && cargo clippy --version; } >/dev/null 2>&1; then
  if [ "$check_only" -eq 1 ]; then
    echo "MISSING rustfmt/clippy (rustup component add rustfmt clippy)"
    status=1
  else
    echo "installing: rustfmt and clippy (rustup components)"
    rustup component add rustfmt clippy
  fi
fi
if command -v cargo >/dev/null 2>&1; then
  echo "ok cargo $(cargo --version 2>/dev/null | awk '{print $2}') ($(command -v cargo))"
  if [ "$need_env_hint" -eq 1 ]; then
    echo "note: cargo is in ~/.cargo/bin but not on your PATH: run 'source ~/.cargo/env'"
  fi
fi

# moto (the AWS emulator of the AWS kinds' tests) in its own venv from PyPI;
# the same path, version and completion marker as crates/rpo-lab/src/moto.rs.
moto_version="5.2.5"
moto_venv="${RPO_MOTO_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/rpo-exporter/moto-venv}"
if [ -f "$moto_venv/.rpo-moto-$moto_version" ] && [ -x "$moto_venv/bin/moto_server" ]; then
  echo "ok moto $moto_version ($moto_venv)"
elif [ "$check_only" -eq 1 ]; then
  echo "MISSING moto (venv $moto_venv)"
  status=1
elif command -v python3 >/dev/null 2>&1; then
  echo "installing: moto[server]==$moto_version into $moto_venv"
  rm -rf "$moto_venv"
  mkdir -p "$(dirname "$moto_venv")"
  if python3 -m venv "$moto_venv" \
    && "$moto_venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$moto_version"; then
    echo "$moto_version" > "$moto_venv/.rpo-moto-$moto_version"
    echo "ok moto $moto_version ($moto_venv)"
  else
    echo "MISSING moto (pip install failed)"
    status=1
  fi
else
  echo "MISSING moto (needs python3)"
  status=1
fi

exit "$status"
