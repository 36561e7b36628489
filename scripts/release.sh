#!/usr/bin/env bash
# The release build: `cargo build --release --locked` of the one shipped
# binary, then a tarball with everything a platform team installs from:
#
#   dist/rpo-exporter-VERSION-TARGET.tar.gz
#     rpo-exporter-VERSION-TARGET/
#       rpo-exporter                 the binary (stripped: see [profile.release])
#       alerts/ dashboards/ deploy/ docs/
#       README.md LICENSE CHANGELOG.md
#   dist/rpo-exporter-VERSION-TARGET.tar.gz.sha256
#
# Usage:
#   scripts/release.sh                  build, then package into dist/
#   scripts/release.sh --out DIR        package into DIR instead
#   scripts/release.sh --binary PATH    package PATH as the binary, without building
#                                       (the test suite packages a stand-in this way)
#   scripts/release.sh --list           print what goes into the tarball, one path a line
set -euo pipefail
cd "$(dirname "$0")/.."

# What the tarball holds besides the binary, in this order.
CONTENTS=(alerts dashboards deploy docs README.md LICENSE CHANGELOG.md)
BINARY_NAME=rpo-exporter
BUILT=target/release/$BINARY_NAME

out=dist
binary=""
list=false
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --binary) binary="$2"; shift 2 ;;
    --list) list=true; shift ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "release.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

if $list; then
  echo "$BUILT"
  printf '%s\n' "${CONTENTS[@]}"
  exit 0
fi

for path in "${CONTENTS[@]}"; do
  [ -e "$path" ] || { echo "release.sh: $path is missing" >&2; exit 1; }
done

# The workspace's version ([workspace.package] version in Cargo.toml).
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n1)
[ -n "$version" ] || { echo "release.sh: no version in Cargo.toml" >&2; exit 1; }
target=$(rustc -vV 2>/dev/null | sed -n 's/^host: //p')
target=${target:-$(uname -m)-unknown-linux-gnu}

if [ -z "$binary" ]; then
  cargo build --release --locked -p rpo-exporter --bin "$BINARY_NAME"
  binary=$BUILT
  # A smoke check of what was built.
  "$binary" --version
  if command -v ldd >/dev/null; then
    echo "links (only the C library is expected):"
    ldd "$binary" || true
  fi
fi
[ -f "$binary" ] || { echo "release.sh: no binary at $binary" >&2; exit 1; }

name="rpo-exporter-$version-$target"
mkdir -p "$out"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir "$stage/$name"
install -m 0755 "$binary" "$stage/$name/$BINARY_NAME"
# Tracked files only where git knows them (no caches, no local state).
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git ls-files -z -- "${CONTENTS[@]}" | xargs -0 -I{} cp --parents {} "$stage/$name/"
else
  cp -R "${CONTENTS[@]}" "$stage/$name/"
fi
find "$stage/$name" -name '__pycache__' -prune -exec rm -rf {} +
tarball="$out/$name.tar.gz"
tar -C "$stage" --owner=0 --group=0 --numeric-owner -czf "$tarball" "$name"
(cd "$out" && sha256sum "$name.tar.gz" > "$name.tar.gz.sha256")
echo "$tarball"
