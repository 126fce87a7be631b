#!/usr/bin/env bash
# `COND && pass ... || fail ...` is an if-then-else in this file: pass always succeeds.
# shellcheck disable=SC2015
#
# The RPM end to end, as an operator meets it:
#   1. build it (twice: release 1, and release 2 of the same binary with a changed default
#      config) and check its files, modes, owners, %config flags and scriptlets;
#   2. install release 1 into a throwaway root, scriptlets included (they create the ftsd
#      account in that root's /etc/passwd), then run the *installed* binary as that account
#      with the *installed* config, its paths rewritten into the root, and GET /whoami over
#      HTTPS with a grid proxy;
#   3. upgrade to release 2: the edited config and the database stay, the new default lands
#      as ftsd.toml.rpmnew, and the service starts again on the same database;
#   4. rotate the log with the packaged logrotate file; remove the package: data, logs, the
#      account and the edited config (as .rpmsave) stay.
#
#   packaging/test-rpm.sh [--binary FILE]
#
# Default binary: target/release/ftsd ($CARGO_TARGET_DIR/release/ftsd when that is set); build
# it first (`make test-rpm` does).
#
# Prints PASS/FAIL/SKIP lines and ends with "test-rpm: N passed, N failed"; exits non-zero on
# any failure. Needs root (rpm --root runs scriptlets in a chroot), rpm and rpmbuild
# (Debian: apt-get install rpm), curl, openssl, setpriv; logrotate and systemd-analyze are
# used when present. Outside CI a missing requirement skips the test loudly; in CI
# (CI=true) it fails.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/.." && pwd)
BINARY=${CARGO_TARGET_DIR:-$TOP/target}/release/ftsd
case "${1:-}" in
  --binary) BINARY=$2 ;;
  "") ;;
  *) echo "usage: $0 [--binary FILE]" >&2; exit 2 ;;
esac

PASSES=0
FAILS=0
pass() { echo "PASS: $*"; PASSES=$((PASSES + 1)); }
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
# check DESCRIPTION COMMAND...: PASS when the command succeeds.
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }
summary() { echo "test-rpm: $PASSES passed, $FAILS failed"; }
# A step that the following ones depend on failed: stop here.
abort() { fail "$*"; summary; exit 1; }
in_ci() { [ -n "${CI:-}" ] && [ "${CI:-}" != false ]; }
skip_all() {
  if in_ci; then abort "$* (required in CI: see .ci/run)"; fi
  echo "SKIPPING the RPM test: $*"
  exit 0
}

[ "$(id -u)" = 0 ] || skip_all "not root (rpm --root needs chroot to run the scriptlets)"
for tool in rpm rpmbuild curl openssl setpriv; do
  command -v "$tool" >/dev/null || skip_all "$tool not installed (apt-get install rpm curl openssl util-linux)"
done
[ -x "$BINARY" ] || abort "no binary at $BINARY (cargo build --release)"

WORK=$(mktemp -d /tmp/ftsd-rpm-test.XXXXXX)
SERVICE_PID=
cleanup() {
  if [ -n "$SERVICE_PID" ]; then kill -KILL "$SERVICE_PID" 2>/dev/null; fi
  if [ -n "${KEEP_WORK:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
# The service runs as the root's ftsd account, which must be able to reach its files.
chmod 0755 "$WORK"
ROOT=$WORK/root

# ---------------------------------------------------------------------------------------------
echo "== build: release 1 and release 2 of $BINARY"
start=$(date +%s%N)
RPM1=$(bash "$HERE/build-rpm.sh" --binary "$BINARY" --release 1 --outdir "$WORK/rpms") ||
  abort "build-rpm.sh (release 1)"
took_ms=$((($(date +%s%N) - start) / 1000000))
pass "built $(basename "$RPM1") ($(stat -c %s "$RPM1") bytes, rpmbuild ${took_ms} ms)"
# Release 2 ships a changed default configuration, to see %config(noreplace) at work.
mkdir -p "$WORK/next"
cp -r "$HERE" "$WORK/next/packaging"
cp "$TOP/Cargo.toml" "$TOP/README.md" "$WORK/next/"
echo "# (release 2 of the default configuration)" >>"$WORK/next/packaging/ftsd.toml"
RPM2=$(bash "$WORK/next/packaging/build-rpm.sh" --binary "$BINARY" --release 2 --outdir "$WORK/rpms") ||
  abort "build-rpm.sh (release 2)"
pass "built $(basename "$RPM2")"

# ---------------------------------------------------------------------------------------------
echo "== contents of $(basename "$RPM1")"
check "rpm -K: digests of the package are intact" rpm -K --nosignature "$RPM1"
expected_files="/etc/ftsd
/etc/ftsd/ftsd.toml
/etc/logrotate.d/ftsd
/usr/bin/ftsd
/usr/lib/systemd/system/ftsd.service
/usr/share/doc/ftsd/README.md
/var/lib/ftsd
/var/log/ftsd"
files=$(rpm -qlp "$RPM1" | sort)
if [ "$files" = "$expected_files" ]; then
  pass "rpm -qlp lists exactly the expected files"
else
  fail "rpm -qlp lists: $(echo "$files" | tr '\n' ' ') (expected: $(echo "$expected_files" | tr '\n' ' '))"
fi
# path, mode, owner, group, file flags (c = %config, n = noreplace, d = %doc)
listing=$(rpm -qp --qf '[%{FILENAMES} %{FILEMODES:octal} %{FILEUSERNAME} %{FILEGROUPNAME} %{FILEFLAGS:fflags}\n]' "$RPM1")
expect_entry() { # path mode owner group flags
  local line
  line=$(echo "$listing" | awk -v p="$1" '$1 == p')
  if [ "$(echo "$line" | awk '{print $2, $3, $4, $5}' | sed 's/ *$//')" = "$(echo "$2 $3 $4 $5" | sed 's/ *$//')" ]; then
    pass "$1: mode $2, $3:$4${5:+, flags $5}"
  else
    fail "$1: expected mode $2 $3:$4 flags '$5', package has: $line"
  fi
}
expect_entry /usr/bin/ftsd 100755 root root ""
expect_entry /usr/lib/systemd/system/ftsd.service 100644 root root ""
expect_entry /etc/ftsd 40755 root root ""
expect_entry /etc/ftsd/ftsd.toml 100640 root ftsd cn
expect_entry /etc/logrotate.d/ftsd 100644 root root cn
expect_entry /var/lib/ftsd 40700 ftsd ftsd ""
expect_entry /var/log/ftsd 40750 ftsd ftsd ""
expect_entry /usr/share/doc/ftsd/README.md 100644 root root d
packaged_sum=$(rpm -qp --dump "$RPM1" | awk '$1 == "/usr/bin/ftsd" {print $4}')
[ "$packaged_sum" = "$(sha256sum "$BINARY" | cut -d' ' -f1)" ] &&
  pass "/usr/bin/ftsd is the binary given ($(stat -c %s "$BINARY") bytes)" ||
  fail "/usr/bin/ftsd differs from $BINARY"
if command -v readelf >/dev/null; then
  ! readelf -S "$BINARY" | grep -q '\.debug_info' && pass "the binary is stripped" ||
    fail "the binary has debug sections (profile.release strip = true?)"
fi
scripts=$(rpm -qp --scripts "$RPM1" | grep -v '^[[:space:]]*#')
echo "$scripts" | grep -q 'useradd -r -g ftsd' && pass "%pre creates the ftsd account" ||
  fail "%pre does not create the ftsd account"
echo "$scripts" | grep -Ewq 'rm|rmdir|userdel|groupdel' &&
  fail "a scriptlet deletes something: $(echo "$scripts" | grep -Ew 'rm|rmdir|userdel|groupdel')" ||
  pass "no scriptlet deletes files or the account"
rpm -qp --qf '%{VERSION}-%{RELEASE}\n' "$RPM2" | grep -q -- '-2$' && pass "release 2 is numbered 2" ||
  fail "release 2 is numbered $(rpm -qp --qf '%{RELEASE}' "$RPM2")"

# ---------------------------------------------------------------------------------------------
echo "== install release 1 into a throwaway root (scriptlets run chrooted there)"
# A root just big enough for the scriptlets: sh, getent, groupadd, useradd and their
# libraries, on the merged-/usr layout of EL9, and empty account databases.
mkdir -p "$ROOT"/usr/{bin,sbin,lib,lib64} "$ROOT"/etc "$ROOT"/run "$ROOT"/tmp
for d in bin sbin lib lib64; do ln -s "usr/$d" "$ROOT/$d"; done
for tool in /bin/sh /usr/bin/getent /usr/sbin/groupadd /usr/sbin/useradd; do
  real=$(command -v "$(basename "$tool")" || echo "$tool")
  cp -L "$real" "$ROOT$tool"
  for lib in $(ldd "$real" | grep -o '/[^ ]*'); do
    [ -e "$ROOT$lib" ] || { mkdir -p "$(dirname "$ROOT$lib")" && cp -L "$lib" "$ROOT$lib"; }
  done
done
echo 'root:x:0:0:root:/root:/bin/sh' >"$ROOT/etc/passwd"
echo 'root:x:0:' >"$ROOT/etc/group"
echo 'root:*:19000:0:99999:7:::' >"$ROOT/etc/shadow"
echo 'root:*::' >"$ROOT/etc/gshadow"
chmod 0640 "$ROOT/etc/shadow" "$ROOT/etc/gshadow"
printf 'SYS_UID_MIN 201\nSYS_UID_MAX 999\nSYS_GID_MIN 201\nSYS_GID_MAX 999\n' >"$ROOT/etc/login.defs"
# The scriptlets silence commands into /dev/null, as every real system has one.
mkdir -p "$ROOT/dev"
mknod -m 0666 "$ROOT/dev/null" c 1 3 || abort "mknod $ROOT/dev/null"

# (Debian's rpm says to use alien instead, and goes on.)
RPMR=(rpm --root "$ROOT" --dbpath /var/lib/rpm)
"${RPMR[@]}" --initdb || abort "rpm --initdb in $ROOT"
"${RPMR[@]}" -i --nodeps "$RPM1" >"$WORK/install.log" 2>&1
rc=$?
cat "$WORK/install.log"
[ $rc = 0 ] || abort "rpm -i failed (status $rc)"
grep -Eqi 'scriptlet|cannot|not exist|error|warning' "$WORK/install.log" &&
  fail "rpm -i printed errors or warnings" || pass "rpm -i: installed, every scriptlet succeeded"
ftsd_entry=$(grep '^ftsd:' "$ROOT/etc/passwd")
FTSD_UID=$(echo "$ftsd_entry" | cut -d: -f3)
FTSD_GID=$(grep '^ftsd:' "$ROOT/etc/group" | cut -d: -f3)
[ -n "$FTSD_UID" ] && [ -n "$FTSD_GID" ] && [ "$FTSD_UID" -lt 1000 ] &&
  echo "$ftsd_entry" | grep -q ':/var/lib/ftsd:/sbin/nologin$' &&
  pass "%pre created the system account: $ftsd_entry" ||
  abort "no ftsd system account in the root: '$ftsd_entry'"
expect_installed() { # path mode uid gid
  local got
  got=$(stat -c '%a %u %g' "$ROOT$1" 2>/dev/null)
  [ "$got" = "$2 $3 $4" ] && pass "installed $1: $got" || fail "installed $1: '$got', expected '$2 $3 $4'"
}
expect_installed /usr/bin/ftsd 755 0 0
expect_installed /usr/lib/systemd/system/ftsd.service 644 0 0
expect_installed /etc/ftsd/ftsd.toml 640 0 "$FTSD_GID"
expect_installed /var/lib/ftsd 700 "$FTSD_UID" "$FTSD_GID"
expect_installed /var/log/ftsd 750 "$FTSD_UID" "$FTSD_GID"
check "rpm -V: the installed files match the package" "${RPMR[@]}" -V --nodeps ftsd

if command -v systemd-analyze >/dev/null; then
  # The unit's implicit dependencies (sysinit.target, ...) must exist in the root to verify it.
  cp -n /usr/lib/systemd/system/*.target "$ROOT/usr/lib/systemd/system/" 2>/dev/null
  if systemd-analyze verify --man=no --root="$ROOT" ftsd.service >"$WORK/verify.log" 2>&1 &&
    ! grep -q . "$WORK/verify.log"; then
    pass "systemd-analyze verify: the unit is clean"
  else
    fail "systemd-analyze verify: $(cat "$WORK/verify.log")"
  fi
  exposure=$(systemd-analyze security --offline=true --root="$ROOT" ftsd.service 2>/dev/null |
    grep -o 'Overall exposure level for ftsd.service: .*' | sed 's/\x1b\[[0-9;]*m//g')
  [ -n "$exposure" ] && echo "     (systemd-analyze security: ${exposure#Overall })"
else
  echo "SKIP: systemd-analyze not installed: the unit is not verified"
fi

# ---------------------------------------------------------------------------------------------
echo "== run the installed binary with the installed configuration"
# A throwaway grid PKI, placed where the configuration says, key owned by the service account
# (as /etc/ftsd/ftsd.toml tells an operator to do).
bash "$TOP/tests/pki/make-test-pki.sh" "$WORK/pki" >"$WORK/pki.log" 2>&1 || {
  cat "$WORK/pki.log"
  abort "make-test-pki.sh"
}
GRID=$ROOT/etc/grid-security
mkdir -p "$GRID"
cp -r "$WORK/pki/certificates" "$WORK/pki/vomsdir" "$WORK/pki/hostcert.pem" "$GRID/"
install -o "$FTSD_UID" -g "$FTSD_GID" -m 0400 "$WORK/pki/hostkey.pem" "$GRID/hostkey.pem"
chmod -R a+rX "$GRID/certificates" "$GRID/vomsdir" "$GRID/hostcert.pem"
PROXY=
for p in proxy_voms.pem proxy_rfc.pem proxy_openssl.pem; do
  if [ -f "$WORK/pki/$p" ]; then PROXY=$WORK/pki/$p; break; fi
done
[ -n "$PROXY" ] || abort "make-test-pki.sh made no proxy"

# The operator's edit: paths into the root, and an ephemeral loopback port.
CONFIG=$ROOT/etc/ftsd/ftsd.toml
sed -i -e "s#\"/etc/grid-security/#\"$GRID/#" -e "s#\"/var/lib/ftsd\"#\"$ROOT/var/lib/ftsd\"#" \
  -e 's#^listen = .*#listen = "127.0.0.1:0"#' "$CONFIG"
grep -q "^host_cert = \"$GRID/hostcert.pem\"" "$CONFIG" && grep -q '^listen = "127.0.0.1:0"' "$CONFIG" ||
  abort "rewriting the installed configuration"
AS_FTSD=(setpriv --reuid="$FTSD_UID" --regid="$FTSD_GID" --clear-groups --)

"${AS_FTSD[@]}" "$ROOT/usr/bin/ftsd" check-config --config "$CONFIG" >"$WORK/check.log" 2>&1
rc=$?
sed 's/^/     /' "$WORK/check.log"
[ $rc = 0 ] && pass "ftsd check-config, as the ftsd account: no error" ||
  fail "ftsd check-config, as the ftsd account: status $rc"

PORT=
# start_service LOG: run the installed binary as the ftsd account; sets SERVICE_PID and PORT.
start_service() {
  FTSD_LOG=info "${AS_FTSD[@]}" "$ROOT/usr/bin/ftsd" serve --config "$CONFIG" >"$1" 2>&1 &
  SERVICE_PID=$!
  PORT=
  for _ in $(seq 1 300); do
    PORT=$(sed 's/\x1b\[[0-9;]*m//g' "$1" | grep -o 'listening address=127\.0\.0\.1:[0-9]*' |
      head -n 1 | sed 's/.*://')
    [ -n "$PORT" ] && return 0
    kill -0 "$SERVICE_PID" 2>/dev/null || break
    sleep 0.1
  done
  cat "$1"
  return 1
}
stop_service() {
  kill -TERM "$SERVICE_PID"
  wait "$SERVICE_PID"
  local rc=$?
  SERVICE_PID=
  return $rc
}
# whoami [curl args...]: prints the body of GET /whoami.
whoami() {
  curl --silent --show-error --fail --max-time 20 --cacert "$WORK/pki/ca.pem" "$@" \
    "https://127.0.0.1:$PORT/whoami"
}
json_field() { grep -o "\"$1\": *\"[^\"]*\"" | head -n 1 | sed 's/.*: *"//; s/"$//'; }

start_service "$WORK/serve1.log" || abort "the installed service did not start"
pass "the installed service listens on 127.0.0.1:$PORT (as uid $FTSD_UID)"
body=$(whoami --cert "$PROXY" --key "$PROXY")
dn=$(echo "$body" | json_field user_dn)
[ "$dn" = "/DC=org/DC=example/CN=Test User" ] &&
  pass "GET /whoami with $(basename "$PROXY"): user_dn $dn" ||
  fail "GET /whoami with $(basename "$PROXY"): $body"
if [ "$(basename "$PROXY")" = proxy_voms.pem ]; then
  echo "$body" | grep -q '"/dteam/Role=NULL/Capability=NULL"' &&
    pass "GET /whoami: the VOMS attributes verify against the installed vomsdir" ||
    fail "GET /whoami: no dteam FQAN in $body"
fi
body=$(whoami)
[ "$(echo "$body" | json_field user_dn)" = anon ] && pass "GET /whoami without a certificate: anon" ||
  fail "GET /whoami without a certificate: $body"
check "SIGTERM stops the service with status 0" stop_service
DB=$ROOT/var/lib/ftsd/ftsd.redb
expect_installed /var/lib/ftsd/ftsd.redb 600 "$FTSD_UID" "$FTSD_GID"
# ftsd_check LABEL: `ftsd check` of the stopped service's database, as the ftsd account.
ftsd_check() {
  "${AS_FTSD[@]}" "$ROOT/usr/bin/ftsd" check --config "$CONFIG" >"$WORK/dbcheck.log" 2>&1
  local rc=$?
  sed 's/^/     /' "$WORK/dbcheck.log"
  [ $rc = 0 ] && grep -q 'no problem found' "$WORK/dbcheck.log" &&
    pass "ftsd check $1: the database is sound" || fail "ftsd check $1: status $rc"
}
ftsd_check "after a clean stop"
# The upgrade's %post runs the new binary's `ftsd check` chrooted in the root: give it the
# binary's libraries, and the data directory under the path the edited configuration names.
for lib in $(ldd "$BINARY" | grep -o '/[^ ]*'); do
  [ -e "$ROOT$lib" ] || { mkdir -p "$(dirname "$ROOT$lib")" && cp -L "$lib" "$ROOT$lib"; }
done
mkdir -p "$ROOT$(dirname "$ROOT/var/lib/ftsd")"
ln -s /var/lib/ftsd "$ROOT$ROOT/var/lib/ftsd"

# ---------------------------------------------------------------------------------------------
echo "== upgrade to release 2"
config_sum=$(sha256sum <"$CONFIG")
# The upgrade's `ftsd check` opens the database, and closing a redb database records its
# allocator state (a commit): the bytes change, the data does not. The upgrade must keep the
# file (not replace it) and leave it sound: same inode, and the same check report.
db_inode=$(stat -c %i "$DB")
report_before=$(grep -v 'integrity check passed' "$WORK/dbcheck.log" | sed 's/ in [0-9.]* s$//')
"${RPMR[@]}" -U --nodeps "$RPM2" >"$WORK/upgrade.log" 2>&1
rc=$?
cat "$WORK/upgrade.log"
[ $rc = 0 ] || abort "rpm -U failed (status $rc)"
grep -v 'ftsd.toml created as /etc/ftsd/ftsd.toml.rpmnew' "$WORK/upgrade.log" |
  grep -Eqi 'scriptlet|cannot|not exist|error|warning' &&
  fail "rpm -U printed errors" || pass "rpm -U: upgraded, every scriptlet succeeded"
grep -q 'ftsd: database check: no problem found' "$WORK/upgrade.log" &&
  pass "the upgrade's %post checked the stopped service's database: sound" ||
  fail "the upgrade's %post did not report its database check"
installed=$("${RPMR[@]}" -q ftsd)
[[ "$installed" == ftsd-*-2.* ]] && pass "installed now: $installed" || fail "installed now: $installed"
[ "$(sha256sum <"$CONFIG")" = "$config_sum" ] && pass "the edited ftsd.toml is kept as it was" ||
  fail "the upgrade changed the edited ftsd.toml"
grep -q '(release 2 of the default configuration)' "$CONFIG.rpmnew" 2>/dev/null &&
  pass "the new default configuration is beside it as ftsd.toml.rpmnew" ||
  fail "no ftsd.toml.rpmnew with the new default"
[ "$(stat -c %i "$DB")" = "$db_inode" ] && pass "the database is the file the service wrote" ||
  fail "the upgrade replaced the database"
ftsd_check "after the upgrade"
report_after=$(grep -v 'integrity check passed' "$WORK/dbcheck.log" | sed 's/ in [0-9.]* s$//')
[ "$report_after" = "$report_before" ] &&
  pass "the database holds what it held before the upgrade: $(grep -o '[0-9]* jobs, [0-9]* files' "$WORK/dbcheck.log")" ||
  fail "the database's check report changed with the upgrade: $report_after"
grep -q "^ftsd:x:$FTSD_UID:" "$ROOT/etc/passwd" && pass "the ftsd account is the same (uid $FTSD_UID)" ||
  fail "the ftsd account changed: $(grep '^ftsd:' "$ROOT/etc/passwd")"
expect_installed /var/lib/ftsd 700 "$FTSD_UID" "$FTSD_GID"
if start_service "$WORK/serve2.log"; then
  dn=$(whoami --cert "$PROXY" --key "$PROXY" | json_field user_dn)
  [ "$dn" = "/DC=org/DC=example/CN=Test User" ] &&
    pass "after the upgrade, on the same database: GET /whoami answers" ||
    fail "after the upgrade: GET /whoami gave '$dn'"
  check "SIGTERM stops the upgraded service with status 0" stop_service
  ftsd_check "after the upgraded service stopped"
  db_sum=$(sha256sum <"$DB")
else
  fail "the upgraded service did not start on the existing database"
fi

# ---------------------------------------------------------------------------------------------
echo "== log rotation"
# What systemd would have written (StandardOutput=append:/var/log/ftsd/ftsd.log).
LOG=$ROOT/var/log/ftsd/ftsd.log
cat "$WORK/serve1.log" "$WORK/serve2.log" >"$LOG"
if command -v logrotate >/dev/null; then
  sed "s#/var/log/ftsd#$ROOT/var/log/ftsd#" "$ROOT/etc/logrotate.d/ftsd" >"$WORK/logrotate.conf"
  if logrotate --force --state "$WORK/logrotate.state" "$WORK/logrotate.conf" >"$WORK/logrotate.log" 2>&1 &&
    [ -f "$LOG.1" ] && [ ! -s "$LOG" ]; then
    pass "logrotate with the packaged file: ftsd.log rotated to ftsd.log.1 and truncated in place"
  else
    fail "logrotate: $(cat "$WORK/logrotate.log"; ls -l "$ROOT/var/log/ftsd")"
  fi
else
  in_ci && fail "logrotate not installed (required in CI)" ||
    echo "SKIP: logrotate not installed: the rotation is not tried"
fi

# ---------------------------------------------------------------------------------------------
echo "== remove"
"${RPMR[@]}" -e ftsd >"$WORK/erase.log" 2>&1
rc=$?
cat "$WORK/erase.log"
[ $rc = 0 ] && pass "rpm -e: removed" || fail "rpm -e failed (status $rc)"
! "${RPMR[@]}" -q ftsd >/dev/null && [ ! -e "$ROOT/usr/bin/ftsd" ] &&
  [ ! -e "$ROOT/usr/lib/systemd/system/ftsd.service" ] &&
  pass "the binary and the unit are gone" || fail "the package is still (partly) there"
[ "$(sha256sum <"$DB" 2>/dev/null)" = "$db_sum" ] && pass "the database is still there, untouched" ||
  fail "removing the package touched the database"
[ -d "$ROOT/var/log/ftsd" ] && pass "the log directory is still there" || fail "the logs are gone"
[ "$(sha256sum <"$CONFIG.rpmsave" 2>/dev/null)" = "$config_sum" ] &&
  pass "the edited configuration is kept as ftsd.toml.rpmsave" ||
  fail "the edited configuration is lost"
grep -q "^ftsd:x:$FTSD_UID:" "$ROOT/etc/passwd" && pass "the ftsd account is kept" ||
  fail "the ftsd account was removed"

summary
[ "$FAILS" = 0 ]
