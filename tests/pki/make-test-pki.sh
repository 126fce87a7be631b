#!/usr/bin/env bash
# make-test-pki.sh DIR  -- throwaway grid PKI for testing an FTS3 REST server.
# (From ../shared/tools/make-test-pki.sh, plus proxy_rfc2.pem, proxy_limited.pem and
#  proxy_legacy_limited.pem, proxy_gt3.pem (GT3 draft) for the ftsd integration tests.)
#
# Creates in DIR (all PEM, unencrypted RSA-2048 keys, mode 0600):
#   ca.pem ca.key                    test CA  /DC=org/DC=example/CN=Test CA (10 years)
#   certificates/<hash>.0 (+ old-hash .0, .signing_policy, .namespaces)   X509_CERT_DIR layout
#   hostcert.pem hostkey.pem         /DC=org/DC=example/CN=localhost  SAN DNS:localhost,IP:127.0.0.1,IP:::1
#   usercert.pem userkey.pem         /DC=org/DC=example/CN=Test User   (clientAuth)
#   user2cert.pem user2key.pem       /DC=org/DC=example/CN=Other User  (a second identity for authz tests)
#   vomscert.pem vomskey.pem         /DC=org/DC=example/CN=voms.example.org (signs the fake VOMS AC)
#   vomsdir/dteam/voms.example.org.lsc   X509_VOMS_DIR layout
#   proxy_rfc.pem                    RFC 3820 proxy of Test User        (grid-proxy-init -rfc)
#   proxy_legacy.pem                 legacy Globus proxy (CN=proxy)     (grid-proxy-init -old)
#   proxy_openssl.pem                RFC 3820 proxy made with openssl only (no grid tools needed)
#   proxy_voms.pem                   RFC 3820 proxy + fake VOMS AC, VO dteam, FQAN /dteam/Role=NULL/Capability=NULL
#   proxy_voms_legacy.pem            same, legacy proxy (voms-proxy-fake -proxyver 2)
#   env.sh                           exports X509_CERT_DIR, X509_VOMS_DIR, X509_USER_PROXY
# Proxy files are "proxy cert, proxy key, issuer chain" in one file (usable as both --cert and --key).
#
# Needs: openssl; for the grid proxies: apt-get install -y globus-proxy-utils voms-clients
# (without them only the openssl-made proxy is produced and the script says so).
# Env: HOURS (proxy lifetime, default 12).  Proxies expire: regenerate at test time.
set -euo pipefail

DIR=${1:?usage: $0 DIR}
HOURS=${HOURS:-12}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
cd "$DIR"
umask 077
LOG="$DIR/make-test-pki.log"
: > "$LOG"

cat > openssl.cnf <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[v3_user]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[v3_host]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1
[v3_voms]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:voms.example.org
[v3_proxy]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
proxyCertInfo = critical, language:id-ppl-inheritAll
EOF

# --- CA -------------------------------------------------------------------
openssl req -x509 -new -config openssl.cnf -extensions v3_ca -newkey rsa:2048 -nodes \
  -keyout ca.key -out ca.pem -days 3650 -sha256 -subj "/DC=org/DC=example/CN=Test CA" >>"$LOG" 2>&1

mkdir -p certificates
H=$(openssl x509 -in ca.pem -noout -subject_hash)
HOLD=$(openssl x509 -in ca.pem -noout -subject_hash_old)
cp ca.pem "certificates/$H.0"
[ "$HOLD" = "$H" ] || cp ca.pem "certificates/$HOLD.0"
for h in $H $HOLD; do
  cat > "certificates/$h.signing_policy" <<'EOF'
access_id_CA   X509   '/DC=org/DC=example/CN=Test CA'
pos_rights     globus CA:sign
cond_subjects  globus '"/DC=org/DC=example/*"'
EOF
  cat > "certificates/$h.namespaces" <<'EOF'
TO Issuer "/DC=org/DC=example/CN=Test CA" \
  PERMIT Subject "/DC=org/DC=example/.*"
EOF
done
chmod 755 certificates; chmod 644 certificates/* ca.pem

# --- end-entity certificates ----------------------------------------------
# issue NAME SUBJECT EXTENSION SERIAL
issue() {
  openssl req -new -newkey rsa:2048 -nodes -keyout "$1key.pem" -out "$1.csr" -subj "$2" >>"$LOG" 2>&1
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -set_serial "$4" -days 365 -sha256 \
    -extfile openssl.cnf -extensions "$3" -out "$1cert.pem" >>"$LOG" 2>&1
  rm -f "$1.csr"
  chmod 600 "$1key.pem"; chmod 644 "$1cert.pem"
}
issue host  "/DC=org/DC=example/CN=localhost"        v3_host 0x1002
issue user  "/DC=org/DC=example/CN=Test User"        v3_user 0x1001
issue user2 "/DC=org/DC=example/CN=Other User"       v3_user 0x1004
issue voms  "/DC=org/DC=example/CN=voms.example.org" v3_voms 0x1003
openssl verify -CAfile ca.pem hostcert.pem usercert.pem user2cert.pem vomscert.pem

mkdir -p vomsdir/dteam
printf '%s\n%s\n' "/DC=org/DC=example/CN=voms.example.org" "/DC=org/DC=example/CN=Test CA" \
  > vomsdir/dteam/voms.example.org.lsc
chmod -R a+rX vomsdir

export X509_CERT_DIR="$DIR/certificates" X509_VOMS_DIR="$DIR/vomsdir"

# --- openssl-only RFC 3820 proxy (always) ----------------------------------
SER=$(date +%s)
openssl req -new -newkey rsa:2048 -nodes -keyout p.key -out p.csr \
  -subj "/DC=org/DC=example/CN=Test User/CN=$SER" >>"$LOG" 2>&1
openssl x509 -req -in p.csr -CA usercert.pem -CAkey userkey.pem -set_serial "$SER" \
  -days 1 -sha256 -extfile openssl.cnf -extensions v3_proxy -out p.crt >>"$LOG" 2>&1
cat p.crt p.key usercert.pem > proxy_openssl.pem
rm -f p.key p.csr p.crt
chmod 600 proxy_openssl.pem
openssl verify -allow_proxy_certs -CApath certificates -untrusted usercert.pem proxy_openssl.pem

# --- grid-tool proxies -----------------------------------------------------
if command -v grid-proxy-init >/dev/null; then
  grid-proxy-init -q -rfc -verify -valid "$HOURS:00" -cert usercert.pem -key userkey.pem -out proxy_rfc.pem >>"$LOG" 2>&1
  grid-proxy-init -q -old -valid "$HOURS:00" -cert usercert.pem -key userkey.pem -out proxy_legacy.pem >>"$LOG" 2>&1
  # ftsd additions: proxy of a proxy, limited proxies (RFC and legacy)
  grid-proxy-init -q -rfc -valid "$((HOURS / 2)):00" -cert proxy_rfc.pem -key proxy_rfc.pem -out proxy_rfc2.pem >>"$LOG" 2>&1
  grid-proxy-init -q -rfc -limited -valid "$HOURS:00" -cert usercert.pem -key userkey.pem -out proxy_limited.pem >>"$LOG" 2>&1
  grid-proxy-init -q -old -limited -valid "$HOURS:00" -cert usercert.pem -key userkey.pem -out proxy_legacy_limited.pem >>"$LOG" 2>&1
  grid-proxy-init -q -draft -valid "$HOURS:00" -cert usercert.pem -key userkey.pem -out proxy_gt3.pem >>"$LOG" 2>&1
else
  echo "NOTE: grid-proxy-init missing (apt-get install -y globus-proxy-utils); proxy_rfc.pem = openssl-made proxy" >&2
  cp proxy_openssl.pem proxy_rfc.pem
fi

if command -v voms-proxy-fake >/dev/null; then
  VOMSARGS=(-cert usercert.pem -key userkey.pem -hostcert vomscert.pem -hostkey vomskey.pem
            -voms dteam -fqan /dteam/Role=NULL/Capability=NULL -uri voms.example.org:15000
            -hours "$HOURS" -vomslife "$HOURS")
  voms-proxy-fake -rfc "${VOMSARGS[@]}" -out proxy_voms.pem >>"$LOG" 2>&1
  voms-proxy-fake -proxyver 2 "${VOMSARGS[@]}" -out proxy_voms_legacy.pem >>"$LOG" 2>&1
  echo "== voms-proxy-info --all proxy_voms.pem"
  voms-proxy-info --all -file proxy_voms.pem
else
  echo "NOTE: voms-proxy-fake missing (apt-get install -y voms-clients); no VOMS proxy made" >&2
fi

if command -v grid-proxy-info >/dev/null; then
  for p in proxy_rfc.pem proxy_legacy.pem proxy_openssl.pem; do
    [ -f "$p" ] && echo "$p: $(grid-proxy-info -file "$p" -type)"
  done
fi

cat > env.sh <<EOF
export X509_CERT_DIR="$DIR/certificates"
export X509_VOMS_DIR="$DIR/vomsdir"
export X509_USER_PROXY="$DIR/$( [ -f proxy_voms.pem ] && echo proxy_voms.pem || echo proxy_rfc.pem )"
EOF
chmod 644 env.sh
echo "OK: test PKI in $DIR  (source $DIR/env.sh)"
