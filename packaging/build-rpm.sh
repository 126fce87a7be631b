#!/usr/bin/env bash
# Package an already built ftsd release binary as an RPM.
#
#   packaging/build-rpm.sh [--binary FILE] [--version V] [--release N] [--outdir DIR]
#
# Defaults: target/release/ftsd, the version in Cargo.toml, release 1, target/rpm/ (under
# $CARGO_TARGET_DIR instead of target/ when that is set, as cargo does).
# Prints the path of the RPM it wrote on its last line.
# Needs rpmbuild: `apt-get install rpm` on Debian/Ubuntu, `dnf install rpm-build` on EL/Fedora.
# `make rpm` builds the binary first and then calls this.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/.." && pwd)
# Where cargo puts its output (CARGO_TARGET_DIR, if set, is relative to the current directory).
TARGET=${CARGO_TARGET_DIR:-$TOP/target}
BINARY=$TARGET/release/ftsd
OUTDIR=$TARGET/rpm
RELEASE=1
# The package's own version, the first `version =` of the [package] table.
VERSION=$(awk '/^\[package\]/ {p = 1; next} /^\[/ {p = 0}
               p && /^version *=/ {gsub(/^[^"]*"|".*$/, ""); print; exit}' "$TOP/Cargo.toml")

while [ $# -gt 0 ]; do
  case "$1" in
    --binary) BINARY=$2; shift 2 ;;
    --version) VERSION=$2; shift 2 ;;
    --release) RELEASE=$2; shift 2 ;;
    --outdir) OUTDIR=$2; shift 2 ;;
    *) echo "usage: $0 [--binary FILE] [--version V] [--release N] [--outdir DIR]" >&2; exit 2 ;;
  esac
done

command -v rpmbuild >/dev/null || {
  echo "build-rpm.sh: rpmbuild not found (Debian: apt-get install rpm; EL: dnf install rpm-build)" >&2
  exit 1
}
[ -x "$BINARY" ] || { echo "build-rpm.sh: no binary at $BINARY (cargo build --release)" >&2; exit 1; }
[ -n "$VERSION" ] || { echo "build-rpm.sh: no version found in $TOP/Cargo.toml" >&2; exit 1; }
# rpm forbids '-' in a version; '~' sorts a Cargo pre-release (1.0.0-rc.1) before its release.
VERSION=${VERSION//-/\~}
BINARY=$(cd "$(dirname "$BINARY")" && pwd)/$(basename "$BINARY")
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
# rpmbuild's --define splits at whitespace.
for p in "$HERE" "$BINARY" "$OUTDIR"; do
  case "$p" in *[[:space:]]*) echo "build-rpm.sh: path with whitespace not supported: $p" >&2; exit 1 ;; esac
done

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# Payload: xz, which every rpm able to run a systemd service reads (EL7 and later).
rpmbuild -bb "$HERE/ftsd.spec" \
  --define "_topdir $WORK" \
  --define "_sourcedir $HERE" \
  --define "_rpmdir $OUTDIR" \
  --define "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" \
  --define "_binary_payload w6.xzdio" \
  --define "ftsd_version $VERSION" \
  --define "ftsd_release $RELEASE" \
  --define "ftsd_binary $BINARY" \
  --define "ftsd_readme $TOP/README.md" \
  >"$WORK/rpmbuild.log" 2>&1 || { cat "$WORK/rpmbuild.log" >&2; exit 1; }
RPM=$(sed -n 's/^Wrote: //p' "$WORK/rpmbuild.log" | tail -n 1)
[ -f "$RPM" ] || { cat "$WORK/rpmbuild.log" >&2; echo "build-rpm.sh: rpmbuild wrote no RPM" >&2; exit 1; }
echo "$RPM"
