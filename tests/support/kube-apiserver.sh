#!/usr/bin/env bash
# tests/support/kube-apiserver.sh - a real kube-apiserver + etcd on loopback
# for ha-vip's integration tests.
#
# Usage:
#   kube-apiserver.sh build              build (or reuse) kube-apiserver from
#                                        Debian's `kubernetes` source package;
#                                        prints the binary's path on stdout
#   kube-apiserver.sh start DIR          start etcd + kube-apiserver, all state
#                                        in DIR; writes DIR/env when ready
#   kube-apiserver.sh stop DIR           stop both (TERM, KILL after a grace)
#   kube-apiserver.sh stop-apiserver DIR stop only kube-apiserver (etcd stays)
#   kube-apiserver.sh start-apiserver DIR
#                                        start it again: same port, same etcd,
#                                        same certs and tokens; rewrites DIR/env
#   kube-apiserver.sh restart-apiserver DIR   stop-apiserver + start-apiserver
#   kube-apiserver.sh start-peer DIR NAME ADDRESS [ARGS..]
#                                        another kube-apiserver on the same
#                                        etcd (a second control-plane node):
#                                        ADDRESS:KUBE_PORT (a loopback address
#                                        such as 127.0.0.2), same certs and
#                                        tokens, extra kube-apiserver ARGS
#                                        appended (e.g.
#                                        --shutdown-delay-duration=3s); pid in
#                                        DIR/NAME.pid, log DIR/NAME.log
#   kube-apiserver.sh stop-peer DIR NAME stop it (TERM, KILL after a grace)
#   kube-apiserver.sh env DIR            print DIR/env
#
# One kube-apiserver per node (the lab's per-node topology,
# tests/common/lab/apiservers.rs); network namespaces are the caller's:
#   kube-apiserver.sh lab-etcd DIR NETNS ADDR
#                                        certs and tokens as `start`, and one
#                                        etcd in NETNS on ADDR:2379; writes
#                                        DIR/env (no KUBE_SERVER: every node
#                                        has its own)
#   kube-apiserver.sh lab-apiserver DIR NAME NETNS ADDR [SAN_IP...]
#                                        start (or start again) node NAME's
#                                        kube-apiserver in NETNS on
#                                        0.0.0.0:6443 (kubeadm's bind address:
#                                        127.0.0.1, ADDR and any VIP there),
#                                        advertising ADDR, on DIR's etcd; its
#                                        own serving cert (same CA) is valid
#                                        for kubernetes, 127.0.0.1, ADDR and
#                                        SAN_IPs; waits for /readyz. State and
#                                        log in DIR/NAME/ (kube-apiserver.pid)
#   kube-apiserver.sh lab-stop DIR       stop every apiserver of DIR, then etcd
#   kube-apiserver.sh status DIR         exit 0 if both processes are alive
#                                        and /readyz answers ok
#   kube-apiserver.sh kubectl DIR ARGS.. kubectl as admin (if kubectl exists)
#
# DIR/env (KEY=VALUE lines, no quoting, safe to `source` or `set -a; . env`):
#   KUBE_SERVER=https://127.0.0.1:PORT   KUBE_PORT=PORT
#   KUBE_CA=DIR/pki/serving-ca.crt       CA that signed the serving cert
#                                        (SANs: kubernetes, localhost, 127.0.0.1)
#   KUBE_ADMIN_TOKEN=...                 user "admin", group system:masters
#   KUBE_USER_TOKEN=...                  user "nobody-user", no extra groups
#   KUBE_CLIENT_CA=DIR/pki/client-ca.crt (+ KUBE_CLIENT_CA_KEY) trusted for
#                                        client certificates
#   KUBE_CLIENT_CERT / KUBE_CLIENT_KEY   client cert for user "ha-vip-node"
#                                        (CN=ha-vip-node, no groups, no RBAC
#                                        rights until a test binds some)
#   KUBE_ADMIN_CERT / KUBE_ADMIN_KEY     client cert CN=kubernetes-admin,
#                                        O=system:masters (as kubeadm's)
#   KUBECONFIG_ADMIN=DIR/admin.kubeconfig   admin token, server, CA
#   KUBECONFIG_ADMIN_CERT=DIR/admin-cert.kubeconfig   admin client cert
#   KUBECONFIG_NODE=DIR/node.kubeconfig     ha-vip-node client cert
#   (kubeconfigs carry their credentials inline: token / *-data fields)
#   ETCD_ENDPOINT=http://127.0.0.1:PORT
#   KUBE_APISERVER_PID=...  ETCD_PID=...
#   KUBE_APISERVER_BIN=...  KUBE_VERSION=...  KUBE_DIR=DIR
#   KUBE_SA_ISSUER=...      KUBE_SA_KEY=DIR/pki/sa.key (signing key)
#
# Environment knobs:
#   HAVIP_CACHE               cache dir (default /var/cache/ha-vip-test); the
#                             binary lives in $HAVIP_CACHE/kube-apiserver-<debian
#                             version>/ together with build.log
#   KUBE_APISERVER_BIN        use this binary instead of building one
#   HAVIP_BUILD_KUBECTL=0     skip kubectl (built by default beside the
#                             apiserver; ~30 s extra)
#   HAVIP_KEEP_BUILD_TREE=1   keep the source and Go build cache (~1.7 GB,
#                             in .../work) after a successful build; by
#                             default only the binaries and build.log stay
#   HAVIP_START_TIMEOUT       seconds to wait for /readyz (default 60)
#   HAVIP_STOP_GRACE          seconds between TERM and KILL (default 5)
#   HAVIP_SHUTDOWN_DELAY      lab-apiserver's --shutdown-delay-duration
#                             (default 0s: kubeadm sets none)
#
# Logs: DIR/etcd.log, DIR/kube-apiserver.log. Pid files: DIR/etcd.pid,
# DIR/kube-apiserver.pid. Both processes run in their own session (setsid)
# with stdin/stdout/stderr detached, so `$(kube-apiserver.sh start DIR)`-style
# callers do not hang.
#
# Needs root (or passwordless sudo) only to apt-get install packages that are
# missing: golang-go rsync dpkg-dev make (build), etcd-server openssl curl.
# The downloaded source and the build tree stay in the cache dir, never in the
# repository. The system's apt sources are left untouched: the deb-src entry
# lives in a private apt directory ($HAVIP_CACHE/apt).
set -euo pipefail
shopt -s inherit_errexit
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

CACHE=${HAVIP_CACHE:-/var/cache/ha-vip-test}
APT_DIR=$CACHE/apt
# Bump when the build recipe changes: binaries built by an older recipe are
# rebuilt (incrementally) on the next `build`.
RECIPE=2
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
SELF=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")

log() { printf '[kube-apiserver.sh] %s\n' "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo -n "$@"
  else
    die "need root for: $*"
  fi
}

now_ms() { date +%s%3N; }

# ---------------------------------------------------------------- build ----

# The Debian mirror and suites of the system's deb822 sources: the first
# stanza whose URI ends in /debian (so not debian-security).
debian_mirror() {
  local f=/etc/apt/sources.list.d/debian.sources uri="" suites=""
  if [ -r "$f" ]; then
    read -r uri suites < <(awk '
      function emit() { if (u ~ /\/debian\/?$/ && s != "") { print u, s; found = 1; exit } }
      /^[[:space:]]*$/ { emit(); u = ""; s = ""; next }
      /^URIs:/   { u = $2 }
      /^Suites:/ { s = $2; for (i = 3; i <= NF; i++) s = s " " $i }
      END { if (!found) emit() }' "$f") || true
  fi
  printf '%s %s\n' "${uri:-http://deb.debian.org/debian}" "${suites:-bookworm}"
}

APT_PRIVATE_OPTS=()
set_apt_private_opts() {
  APT_PRIVATE_OPTS=(
    -o "Dir::Etc::SourceList=$APT_DIR/sources.list"
    -o "Dir::Etc::SourceParts=$APT_DIR/sources.list.d"
    -o "Dir::State::Lists=$APT_DIR/lists"
    -o "Dir::Cache=$APT_DIR/cache"
    -o "APT::Sandbox::User=root"
  )
}

setup_private_apt() {
  local uri suites s
  read -r uri suites < <(debian_mirror)
  mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$APT_DIR/sources.list.d"
  : >"$APT_DIR/sources.list.new"
  for s in $suites; do
    printf 'deb-src [signed-by=%s] %s %s main\n' "$KEYRING" "$uri" "$s" >>"$APT_DIR/sources.list.new"
  done
  mv "$APT_DIR/sources.list.new" "$APT_DIR/sources.list"
  set_apt_private_opts
}

# Newest version of the kubernetes source package in the private lists.
kube_src_version() {
  apt-cache "${APT_PRIVATE_OPTS[@]}" showsrc kubernetes 2>/dev/null |
    awk '/^Version:/ { print $2 }' | sort -V | tail -n1
}

ensure_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  if ! as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null 2>&1; then
    as_root apt-get update -qq </dev/null >/dev/null 2>&1 || true
    as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null ||
      die "apt-get install ${missing[*]} failed"
  fi
}

runtime_packages() { ensure_packages etcd-server openssl curl ca-certificates; }

is_built() {
  [ -x "$1/kube-apiserver" ] && [ "$(cat "$1/recipe" 2>/dev/null)" = "$RECIPE" ] &&
    { [ "${HAVIP_BUILD_KUBECTL:-1}" != 1 ] || [ -x "$1/kubectl" ]; }
}

cmd_build() {
  if [ -n "${KUBE_APISERVER_BIN:-}" ]; then
    [ -x "$KUBE_APISERVER_BIN" ] || die "KUBE_APISERVER_BIN=$KUBE_APISERVER_BIN is not executable"
    runtime_packages
    echo "$KUBE_APISERVER_BIN"
    return 0
  fi
  mkdir -p "$CACHE"
  exec 9>"$CACHE/build.lock"
  flock 9
  runtime_packages

  setup_private_apt
  local ver="" out
  # Fast path: the private lists are there and the binary for the newest
  # source version in them is built.
  if [ -d "$APT_DIR/lists" ]; then ver=$(kube_src_version || true); fi
  if [ -n "$ver" ] && is_built "$CACHE/kube-apiserver-$ver"; then
    log "cached: kube-apiserver $ver"
    echo "$CACHE/kube-apiserver-$ver/kube-apiserver"
    return 0
  fi

  log "apt-get update (private deb-src list: $(tr '\n' ';' <"$APT_DIR/sources.list"))"
  if ! apt-get "${APT_PRIVATE_OPTS[@]}" update -qq </dev/null >/dev/null 2>"$APT_DIR/update.err"; then
    cat "$APT_DIR/update.err" >&2
    die "apt-get update with the private deb-src list failed"
  fi
  ver=$(kube_src_version || true)
  [ -n "$ver" ] || die "no 'kubernetes' source package in $(cat "$APT_DIR/sources.list")"
  out=$CACHE/kube-apiserver-$ver
  if is_built "$out"; then
    log "cached: kube-apiserver $ver"
    echo "$out/kube-apiserver"
    return 0
  fi

  # reflect2: see the comment at the vendor patch below
  ensure_packages golang-go rsync make dpkg-dev golang-github-modern-go-reflect2-dev
  mkdir -p "$out"
  local buildlog=$out/build.log work=$out/work t0=$SECONDS free_mb
  free_mb=$(df -Pm "$out" | awk 'NR == 2 { print $4 }')
  if [ -n "$free_mb" ] && [ "$free_mb" -lt 2500 ]; then
    die "only ${free_mb} MB free under $CACHE; the build needs about 2.5 GB (set HAVIP_CACHE elsewhere)"
  fi
  log "building kube-apiserver $ver, takes several minutes (log: $buildlog)"
  local rc=0
  set +e
  (
    set -euo pipefail
    gopath=$work/gopath
    src=$gopath/src/k8s.io/kubernetes
    if [ ! -f "$src/.havip-extracted" ]; then
      rm -rf "$work"
      mkdir -p "$work/dl" "$gopath/src/k8s.io"
      cd "$work/dl"
      echo "== apt-get source --download-only kubernetes=$ver"
      apt-get "${APT_PRIVATE_OPTS[@]}" source --download-only "kubernetes=$ver" </dev/null
      echo "== dpkg-source -x (applies Debian's patches)"
      dpkg-source --no-check -x ./kubernetes_*.dsc "$src"
      touch "$src/.havip-extracted"
    fi
    cd "$src"
    # Kubernetes 1.20 vendors github.com/modern-go/reflect2 v1.0.1, which
    # breaks under Go >= 1.18 (bookworm has Go 1.19): the apiserver panics
    # with a nil dereference in reflect2.(*frozenConfig).Type2 while decoding
    # JSON (e.g. on a list of leases). v1.0.2 fixes it and is a drop-in
    # replacement; take it from Debian's golang-github-modern-go-reflect2-dev.
    r2=/usr/share/gocode/src/github.com/modern-go/reflect2
    if [ ! -f .havip-reflect2 ]; then
      echo "== replacing vendored reflect2 with $(dpkg-query -W -f='${Version}' golang-github-modern-go-reflect2-dev)"
      [ -f "$r2/go_above_118.go" ] || { echo "reflect2 >= 1.0.2 not found in $r2"; exit 1; }
      rm -rf vendor/github.com/modern-go/reflect2
      mkdir -p vendor/github.com/modern-go/reflect2
      cp "$r2"/*.go "$r2"/*.s vendor/github.com/modern-go/reflect2/
      touch .havip-reflect2
    fi
    export HOME=${HOME:-$work}
    export GOPATH=$gopath GO111MODULE=off GOFLAGS='' GOCACHE=$work/gocache GOTOOLCHAIN=local
    if [ ! -f .havip-generated ]; then
      echo "== make generated_files"
      make generated_files
      touch .havip-generated
    fi
    upstream=${ver#*really}
    upstream=${upstream%%-*}
    major=${upstream%%.*}
    minor=${upstream#*.}
    minor=${minor%%.*}
    v=k8s.io/kubernetes/vendor/k8s.io/component-base/version
    ldflags="-s -w -X $v.gitVersion=v$upstream -X $v.gitMajor=$major -X $v.gitMinor=$minor -X $v.gitTreeState=archive"
    if [ "$(cat "$out/recipe" 2>/dev/null)" != "$RECIPE" ]; then
      rm -f "$out/kube-apiserver" "$out/kubectl"
    fi
    if [ ! -x "$out/kube-apiserver" ]; then
      echo "== go build ./cmd/kube-apiserver ($(go version))"
      CGO_ENABLED=0 go build -ldflags "$ldflags" -o "$out/kube-apiserver.tmp" ./cmd/kube-apiserver
      mv "$out/kube-apiserver.tmp" "$out/kube-apiserver"
    fi
    if [ "${HAVIP_BUILD_KUBECTL:-1}" = 1 ] && [ ! -x "$out/kubectl" ]; then
      echo "== go build ./cmd/kubectl"
      CGO_ENABLED=0 go build -ldflags "$ldflags" -o "$out/kubectl.tmp" ./cmd/kubectl
      mv "$out/kubectl.tmp" "$out/kubectl"
    fi
    echo "$RECIPE" >"$out/recipe"
    echo "== done"
  ) >"$buildlog" 2>&1
  rc=$?
  set -e
  if [ "$rc" != 0 ]; then
    log "build FAILED; tail of $buildlog:"
    tail -n 40 "$buildlog" >&2
    exit 1
  fi
  log "built kube-apiserver $ver in $((SECONDS - t0)) s"
  if [ "${HAVIP_KEEP_BUILD_TREE:-0}" != 1 ]; then
    rm -rf "$work" # ~1.7 GB of source, generated files and Go build cache
  fi
  echo "$out/kube-apiserver"
}

# ------------------------------------------------------------ processes ----

abs_dir() {
  [ -n "${1:-}" ] || die "missing DIR argument"
  mkdir -p "$1"
  (cd "$1" && pwd)
}

# Is PID a process that has not exited (zombies count as gone)?
proc_alive() {
  local st
  st=$(sed -e 's/^.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "${st%% *}" != Z ]
}

# pid from a pid file, only if that process is still ours: its command line
# mentions DIR, so a recycled pid is never signalled. (An empty command line
# is accepted: /proc/PID/cmdline can read empty while the process execs.)
live_pid() {
  local dir=$1 name=$2 pid cmd
  [ -s "$dir/$name.pid" ] || return 1
  pid=$(cat "$dir/$name.pid")
  case $pid in '' | *[!0-9]*) return 1 ;; esac
  proc_alive "$pid" || return 1
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  case $cmd in '' | *"$dir"*) ;; *) return 1 ;; esac
  echo "$pid"
}

stop_proc() {
  local dir=$1 name=$2 pid i grace=${HAVIP_STOP_GRACE:-5}
  if pid=$(live_pid "$dir" "$name"); then
    # each process leads its own session and process group (setsid)
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
      live_pid "$dir" "$name" >/dev/null || break
      sleep 0.1
    done
    if live_pid "$dir" "$name" >/dev/null; then
      log "$name (pid $pid) ignored TERM for ${grace}s, sending KILL"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do
        live_pid "$dir" "$name" >/dev/null || break
        sleep 0.1
      done
    fi
  fi
  rm -f "$dir/$name.pid"
}

# Start "$@" detached: own session, stdio to DIR/NAME.log; writes NAME.pid.
spawn() {
  local dir=$1 name=$2
  shift 2
  # not a process group leader here, so setsid does not fork: $! is the pid
  setsid "$@" </dev/null >>"$dir/$name.log" 2>&1 &
  echo $! >"$dir/$name.pid"
}

# Sets PORT to a port in 20000-32767 (below Linux's ephemeral range) that
# nothing listens on and that this run has not handed out yet. Parallel
# harnesses may still race for one; callers retry when a bind fails.
PICKED=" "
PORT=
pick_port() {
  local p i
  for ((i = 0; i < 200; i++)); do
    p=$((20000 + (RANDOM * 32768 + RANDOM) % 12768))
    case $PICKED in *" $p "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      PICKED="$PICKED$p "
      PORT=$p
      return 0
    fi
  done
  die "no free port found"
}

# ----------------------------------------------------------------- pki -----

ossl() { openssl "$@" 2>/dev/null; }

# CAs, the serving cert and the service-account key use ECDSA P-256 (fast to
# generate); the client cert for ha-vip-node uses RSA 2048, which every TLS
# client stack accepts as a client key. Keys are PKCS#8 PEM.
make_ca() { # make_ca BASE CN
  ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$1.key" -out "$1.crt" \
    -days 3650 -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"
}

make_leaf() { # make_leaf CA_BASE BASE KEYSPEC SUBJECT EXT_LINES...
  local ca=$1 base=$2 keyspec=$3 subj=$4
  shift 4
  printf '%s\n' "$@" >"$base.ext"
  # shellcheck disable=SC2086 # keyspec is several words on purpose
  ossl req -new -newkey $keyspec -nodes -keyout "$base.key" -out "$base.csr" -subj "$subj"
  ossl x509 -req -in "$base.csr" -CA "$ca.crt" -CAkey "$ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$base.ext" -out "$base.crt"
  rm -f "$base.csr" "$base.ext"
}

make_pki() {
  local pki=$1
  mkdir -p "$pki"
  (
    umask 077
    cd "$pki"
    make_ca serving-ca ha-vip-test-serving-ca
    make_leaf serving-ca apiserver "ec -pkeyopt ec_paramgen_curve:prime256v1" /CN=kube-apiserver \
      "basicConstraints=critical,CA:FALSE" \
      "keyUsage=critical,digitalSignature,keyEncipherment" \
      "extendedKeyUsage=serverAuth" \
      "subjectAltName=DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:10.0.0.1"
    make_ca client-ca ha-vip-test-client-ca
    make_leaf client-ca ha-vip-node rsa:2048 /CN=ha-vip-node \
      "basicConstraints=critical,CA:FALSE" \
      "keyUsage=critical,digitalSignature,keyEncipherment" \
      "extendedKeyUsage=clientAuth"
    # like kubeadm's admin.conf: a cert in group system:masters
    make_leaf client-ca admin rsa:2048 /O=system:masters/CN=kubernetes-admin \
      "basicConstraints=critical,CA:FALSE" \
      "keyUsage=critical,digitalSignature,keyEncipherment" \
      "extendedKeyUsage=clientAuth"
    ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out sa.key
    ossl pkey -in sa.key -pubout -out sa.pub
    chmod 644 ./*.crt sa.pub
  ) || die "generating certificates with openssl failed"
}

# --------------------------------------------------------------- start -----

# kubeconfig FILE SERVER CA USER USER_FIELD_LINES...
kubeconfig() {
  local file=$1 server=$2 ca=$3 user=$4
  shift 4
  {
    cat <<EOF
apiVersion: v1
kind: Config
clusters:
- name: ha-vip-test
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 <"$ca")
users:
- name: $user
  user:
EOF
    printf '    %s\n' "$@"
    cat <<EOF
contexts:
- name: $user
  context:
    cluster: ha-vip-test
    user: $user
    namespace: kube-system
current-context: $user
EOF
  } >"$file"
  chmod 600 "$file"
}

# Credentials are inlined (token, *-data), as in kubeadm's admin.conf.
write_kubeconfigs() {
  local dir=$1 server=$2 ca=$3 token=$4 p=$1/pki
  kubeconfig "$dir/admin.kubeconfig" "$server" "$ca" admin "token: $token"
  kubeconfig "$dir/admin-cert.kubeconfig" "$server" "$ca" kubernetes-admin \
    "client-certificate-data: $(base64 -w0 <"$p/admin.crt")" \
    "client-key-data: $(base64 -w0 <"$p/admin.key")"
  kubeconfig "$dir/node.kubeconfig" "$server" "$ca" ha-vip-node \
    "client-certificate-data: $(base64 -w0 <"$p/ha-vip-node.crt")" \
    "client-key-data: $(base64 -w0 <"$p/ha-vip-node.key")"
}

tail_log() {
  local f=$1
  log "---- tail of $f ----"
  tail -n 30 "$f" >&2 2>/dev/null || true
  log "----"
}

start_etcd() { # start_etcd DIR CLIENT_PORT PEER_PORT; 0 ok, 2 port clash
  local dir=$1 cport=$2 pport=$3 i data=$1/etcd
  : >"$dir/etcd.log"
  spawn "$dir" etcd etcd --name havip --data-dir "$data" \
    --listen-client-urls "http://127.0.0.1:$cport" \
    --advertise-client-urls "http://127.0.0.1:$cport" \
    --listen-peer-urls "http://127.0.0.1:$pport" \
    --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
    --initial-cluster "havip=http://127.0.0.1:$pport" \
    --initial-cluster-state new --initial-cluster-token "havip-$$-$RANDOM" \
    --logger zap --log-level warn --quota-backend-bytes 1073741824 \
    --heartbeat-interval 20 --election-timeout 200 --snapshot-count 10000 --auto-compaction-retention 1h
  local pid
  pid=$(cat "$dir/etcd.pid")
  for ((i = 0; i < 300; i++)); do
    if ! proc_alive "$pid"; then
      if grep -q 'address already in use' "$dir/etcd.log"; then return 2; fi
      tail_log "$dir/etcd.log"
      die "etcd exited during start-up"
    fi
    if curl -fsS -m 1 "http://127.0.0.1:$cport/health" 2>/dev/null | grep -q '"health":"true"'; then
      return 0
    fi
    sleep 0.1
  done
  tail_log "$dir/etcd.log"
  die "etcd not healthy after 30 s"
}

# The apiserver's argument list is kept in DIR/kube-apiserver.args (one per
# line) so start-apiserver can bring it back exactly as it was.
write_apiserver_args() {
  local dir=$1 port=$2 etcd=$3
  cat >"$dir/kube-apiserver.args" <<EOF
--bind-address=127.0.0.1
--advertise-address=127.0.0.1
--secure-port=$port
--insecure-port=0
--etcd-servers=$etcd
--cert-dir=$dir/pki
--tls-cert-file=$dir/pki/apiserver.crt
--tls-private-key-file=$dir/pki/apiserver.key
--client-ca-file=$dir/pki/client-ca.crt
--token-auth-file=$dir/tokens.csv
--authorization-mode=RBAC
--service-account-issuer=https://kubernetes.default.svc.cluster.local
--service-account-key-file=$dir/pki/sa.pub
--service-account-signing-key-file=$dir/pki/sa.key
--service-cluster-ip-range=10.0.0.0/24
--endpoint-reconciler-type=none
--enable-priority-and-fairness=false
--profiling=false
--logtostderr=true
--v=1
EOF
}

start_apiserver_proc() { # DIR BIN PORT -> 0 ready, 2 port clash
  local dir=$1 bin=$2 port=$3 t_end code i
  local -a args
  mapfile -t args <"$dir/kube-apiserver.args"
  echo "==== $(date -u +%FT%TZ) start" >>"$dir/kube-apiserver.log"
  spawn "$dir" kube-apiserver "$bin" "${args[@]}"
  local pid
  pid=$(cat "$dir/kube-apiserver.pid")
  t_end=$((SECONDS + ${HAVIP_START_TIMEOUT:-60}))
  while :; do
    if ! proc_alive "$pid"; then
      if tail -n 20 "$dir/kube-apiserver.log" | grep -q 'address already in use'; then return 2; fi
      tail_log "$dir/kube-apiserver.log"
      die "kube-apiserver exited during start-up (log: $dir/kube-apiserver.log)"
    fi
    code=$(curl -sS -o "$dir/.readyz" -w '%{http_code}' -m 2 --cacert "$dir/pki/serving-ca.crt" \
      -H "Authorization: Bearer $(cut -d, -f1 <"$dir/tokens.csv" | head -n1)" \
      "https://127.0.0.1:$port/readyz" 2>/dev/null) || true
    [ "$code" = 200 ] && break
    if [ "$SECONDS" -ge "$t_end" ]; then
      log "kube-apiserver not ready after ${HAVIP_START_TIMEOUT:-60} s; last /readyz (HTTP $code):"
      curl -sS -m 2 --cacert "$dir/pki/serving-ca.crt" \
        -H "Authorization: Bearer $(cut -d, -f1 <"$dir/tokens.csv" | head -n1)" \
        "https://127.0.0.1:$port/readyz?verbose" 2>&1 | grep -v '\[+\]' >&2 || true
      tail_log "$dir/kube-apiserver.log"
      stop_proc "$dir" kube-apiserver
      die "kube-apiserver start-up timed out (log: $dir/kube-apiserver.log)"
    fi
    sleep 0.1
  done
  rm -f "$dir/.readyz"
  # 1.20 creates kube-system in a post-start hook; make sure it exists
  for ((i = 0; i < 100; i++)); do
    code=$(curl -sS -o /dev/null -w '%{http_code}' -m 2 --cacert "$dir/pki/serving-ca.crt" \
      -H "Authorization: Bearer $(cut -d, -f1 <"$dir/tokens.csv" | head -n1)" \
      "https://127.0.0.1:$port/api/v1/namespaces/kube-system" 2>/dev/null) || true
    [ "$code" = 200 ] && return 0
    sleep 0.1
  done
  tail_log "$dir/kube-apiserver.log"
  die "namespace kube-system does not exist (HTTP $code)"
}

# DIR/state: ports, tokens and binary of a harness (shell assignments).
API_PORT='' ETCD_PORT='' ADMIN_TOKEN='' USER_TOKEN='' BIN='' KVERSION=''
load_state() {
  [ -f "$1/state" ] || die "$1 has no harness (run start first)"
  # shellcheck disable=SC1091
  . "$1/state"
}

write_env() {
  local dir=$1
  load_state "$dir"
  local etcd_pid api_pid
  etcd_pid=$(cat "$dir/etcd.pid" 2>/dev/null || true)
  api_pid=$(cat "$dir/kube-apiserver.pid" 2>/dev/null || true)
  cat >"$dir/env.new" <<EOF
KUBE_DIR=$dir
KUBE_SERVER=https://127.0.0.1:$API_PORT
KUBE_PORT=$API_PORT
KUBE_CA=$dir/pki/serving-ca.crt
KUBE_ADMIN_TOKEN=$ADMIN_TOKEN
KUBE_USER_TOKEN=$USER_TOKEN
KUBE_CLIENT_CA=$dir/pki/client-ca.crt
KUBE_CLIENT_CA_KEY=$dir/pki/client-ca.key
KUBE_CLIENT_CERT=$dir/pki/ha-vip-node.crt
KUBE_CLIENT_KEY=$dir/pki/ha-vip-node.key
KUBE_CLIENT_USER=ha-vip-node
KUBE_ADMIN_CERT=$dir/pki/admin.crt
KUBE_ADMIN_KEY=$dir/pki/admin.key
KUBE_SA_ISSUER=https://kubernetes.default.svc.cluster.local
KUBE_SA_KEY=$dir/pki/sa.key
KUBECONFIG_ADMIN=$dir/admin.kubeconfig
KUBECONFIG_NODE=$dir/node.kubeconfig
KUBECONFIG_ADMIN_CERT=$dir/admin-cert.kubeconfig
ETCD_ENDPOINT=http://127.0.0.1:$ETCD_PORT
ETCD_PID=$etcd_pid
KUBE_APISERVER_PID=$api_pid
KUBE_APISERVER_BIN=$BIN
KUBE_VERSION=$KVERSION
EOF
  mv "$dir/env.new" "$dir/env"
}

# If a start fails (or is interrupted) half-way, stop what it started.
CLEANUP_DIR=''
CLEANUP_WHAT=''
on_exit() {
  local rc=$?
  if [ -n "$CLEANUP_DIR" ]; then
    log "start failed; stopping $CLEANUP_WHAT of $CLEANUP_DIR"
    for name in $CLEANUP_WHAT; do stop_proc "$CLEANUP_DIR" "$name"; done
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cmd_start() {
  local dir bin t0 t_pki t_etcd attempt rc admin user
  dir=$(abs_dir "${1:-}")
  if live_pid "$dir" etcd >/dev/null || live_pid "$dir" kube-apiserver >/dev/null; then
    die "$dir already has a running harness; stop it first"
  fi
  bin=$(cmd_build)
  runtime_packages
  t0=$(now_ms)
  rm -rf "$dir/etcd" "$dir/pki" "$dir/env" "$dir/state"
  CLEANUP_DIR=$dir
  CLEANUP_WHAT="kube-apiserver etcd"
  make_pki "$dir/pki"
  t_pki=$(now_ms)
  admin=$(openssl rand -hex 16)
  user=$(openssl rand -hex 16)
  (
    umask 077
    printf '%s,admin,uid-admin,"system:masters"\n%s,nobody-user,uid-nobody-user\n' \
      "$admin" "$user" >"$dir/tokens.csv"
  )
  local etcd_port peer_port api_port
  for attempt in 1 2 3 4 5; do
    pick_port
    etcd_port=$PORT
    pick_port
    peer_port=$PORT
    rc=0
    start_etcd "$dir" "$etcd_port" "$peer_port" || rc=$?
    [ "$rc" = 0 ] && break
    log "etcd port clash, retrying ($attempt)"
    stop_proc "$dir" etcd
    rm -rf "$dir/etcd"
  done
  [ "$rc" = 0 ] || die "could not start etcd"
  t_etcd=$(now_ms)
  for attempt in 1 2 3 4 5; do
    pick_port
    api_port=$PORT
    write_apiserver_args "$dir" "$api_port" "http://127.0.0.1:$etcd_port"
    rc=0
    start_apiserver_proc "$dir" "$bin" "$api_port" || rc=$?
    [ "$rc" = 0 ] && break
    log "apiserver port clash, retrying ($attempt)"
    stop_proc "$dir" kube-apiserver
  done
  if [ "$rc" != 0 ]; then
    stop_proc "$dir" etcd
    die "could not start kube-apiserver"
  fi
  local kversion
  kversion=$("$bin" --version 2>/dev/null | awk '{ print $2 }') || true
  cat >"$dir/state" <<EOF
API_PORT=$api_port
ETCD_PORT=$etcd_port
ADMIN_TOKEN=$admin
USER_TOKEN=$user
BIN=$bin
KVERSION=$kversion
EOF
  write_kubeconfigs "$dir" "https://127.0.0.1:$api_port" "$dir/pki/serving-ca.crt" "$admin"
  write_env "$dir"
  CLEANUP_DIR=''
  local t1
  t1=$(now_ms)
  log "ready in $((t1 - t0)) ms (certs $((t_pki - t0)) ms, etcd $((t_etcd - t_pki)) ms, kube-apiserver $((t1 - t_etcd)) ms): https://127.0.0.1:$api_port, env in $dir/env"
}

cmd_start_apiserver() {
  local dir t0 rc
  dir=$(abs_dir "${1:-}")
  [ -f "$dir/state" ] || die "$dir has no harness (run start first)"
  live_pid "$dir" etcd >/dev/null || die "etcd of $dir is not running"
  if live_pid "$dir" kube-apiserver >/dev/null; then
    log "kube-apiserver of $dir already running"
    return 0
  fi
  load_state "$dir"
  t0=$(now_ms)
  CLEANUP_DIR=$dir
  CLEANUP_WHAT=kube-apiserver
  rc=0
  start_apiserver_proc "$dir" "$BIN" "$API_PORT" || rc=$?
  if [ "$rc" = 2 ]; then
    # the old socket may linger for a moment; try again a few times
    local i
    for i in 1 2 3 4 5; do
      sleep 1
      stop_proc "$dir" kube-apiserver
      rc=0
      start_apiserver_proc "$dir" "$BIN" "$API_PORT" || rc=$?
      [ "$rc" = 0 ] && break
    done
  fi
  [ "$rc" = 0 ] || die "port $API_PORT stays in use; kube-apiserver cannot restart"
  write_env "$dir"
  CLEANUP_DIR=''

  log "kube-apiserver ready again in $(($(now_ms) - t0)) ms on port $API_PORT"
}

# A second kube-apiserver on the harness's etcd: the main one's arguments
# with another bind and advertise address, plus the caller's.
cmd_start_peer() {
  local dir name addr t0 t_end code pid
  dir=$(abs_dir "${1:-}")
  name=${2:-}
  addr=${3:-}
  shift 3 || die "usage: start-peer DIR NAME ADDRESS [ARGS..]"
  case $name in '' | *[!a-z0-9-]* | kube-apiserver | etcd) die "start-peer: bad NAME '$name'" ;; esac
  [ -n "$addr" ] || die "start-peer: no ADDRESS"
  [ -f "$dir/state" ] || die "$dir has no harness (run start first)"
  live_pid "$dir" etcd >/dev/null || die "etcd of $dir is not running"
  live_pid "$dir" "$name" >/dev/null && die "$name of $dir is already running"
  load_state "$dir"
  local -a args
  mapfile -t args < <(grep -v -e '^--bind-address=' -e '^--advertise-address=' "$dir/kube-apiserver.args")
  args+=("--bind-address=$addr" "--advertise-address=$addr" "$@")
  t0=$(now_ms)
  echo "==== $(date -u +%FT%TZ) start" >>"$dir/$name.log"
  spawn "$dir" "$name" "$BIN" "${args[@]}"
  pid=$(cat "$dir/$name.pid")
  t_end=$((SECONDS + ${HAVIP_START_TIMEOUT:-60}))
  while :; do
    if ! proc_alive "$pid"; then
      tail_log "$dir/$name.log"
      die "$name exited during start-up (log: $dir/$name.log)"
    fi
    # The serving certificate names 127.0.0.1 and kubernetes: verify it
    # as kubernetes, connected to ADDRESS.
    code=$(curl -sS -o /dev/null -w '%{http_code}' -m 2 --cacert "$dir/pki/serving-ca.crt" \
      --connect-to "kubernetes:$API_PORT:$addr:$API_PORT" \
      "https://kubernetes:$API_PORT/readyz" 2>/dev/null) || true
    [ "$code" = 200 ] && break
    if [ "$SECONDS" -ge "$t_end" ]; then
      tail_log "$dir/$name.log"
      stop_proc "$dir" "$name"
      die "$name start-up timed out (log: $dir/$name.log)"
    fi
    sleep 0.1
  done
  log "$name ready in $(($(now_ms) - t0)) ms on $addr:$API_PORT"
}

cmd_stop_apiserver() {
  local dir
  dir=$(abs_dir "${1:-}")
  stop_proc "$dir" kube-apiserver
  [ ! -f "$dir/state" ] || write_env "$dir"
}

cmd_stop() {
  local dir
  dir=$(abs_dir "${1:-}")
  stop_proc "$dir" kube-apiserver
  stop_proc "$dir" etcd
  [ ! -f "$dir/state" ] || write_env "$dir"
}

cmd_status() {
  local dir ok=0 code
  dir=$(abs_dir "${1:-}")
  [ -f "$dir/state" ] || die "$dir has no harness"
  load_state "$dir"
  if live_pid "$dir" etcd >/dev/null; then echo "etcd: running (pid $(cat "$dir/etcd.pid"))"; else
    echo "etcd: stopped"
    ok=1
  fi
  if live_pid "$dir" kube-apiserver >/dev/null; then
    code=$(curl -sS -o /dev/null -w '%{http_code}' -m 2 --cacert "$dir/pki/serving-ca.crt" \
      -H "Authorization: Bearer $ADMIN_TOKEN" "https://127.0.0.1:$API_PORT/readyz" 2>/dev/null) || true
    echo "kube-apiserver: running (pid $(cat "$dir/kube-apiserver.pid")), /readyz HTTP $code"
    [ "$code" = 200 ] || ok=1
  else
    echo "kube-apiserver: stopped"
    ok=1
  fi
  return "$ok"
}

cmd_kubectl() {
  local dir kubectl
  dir=$(abs_dir "${1:-}")
  shift
  load_state "$dir"
  kubectl=$(dirname "$BIN")/kubectl
  [ -x "$kubectl" ] || kubectl=$(command -v kubectl) ||
    die "no kubectl beside $BIN (build without HAVIP_BUILD_KUBECTL=0)"
  exec "$kubectl" --kubeconfig "$dir/admin.kubeconfig" "$@"
}

# ------------------------------------------------ per-node topology (lab) --
# DIR/pki, DIR/tokens.csv: shared by every node, as a kubeadm cluster shares
# its CAs, service-account key and credentials. DIR/etcd*: the one etcd.
# DIR/NAME/: node NAME's kube-apiserver (args, pid, log, serving cert).

# Runs "$@" inside network namespace $1.
in_ns() {
  local ns=$1
  shift
  ip netns exec "$ns" "$@"
}

cmd_lab_etcd() { # DIR NETNS ADDR
  local dir ns=${2:-} addr=${3:-} bin t0 i pid admin user kversion
  dir=$(abs_dir "${1:-}")
  [ -n "$ns" ] && [ -n "$addr" ] || die "usage: lab-etcd DIR NETNS ADDR"
  [ -e "/run/netns/$ns" ] || die "network namespace $ns does not exist (the lab creates it)"
  if live_pid "$dir" etcd >/dev/null; then die "$dir already has a running etcd; lab-stop it first"; fi
  bin=$(cmd_build)
  t0=$(now_ms)
  rm -rf "$dir/etcd" "$dir/pki" "$dir/env" "$dir/state"
  CLEANUP_DIR=$dir
  CLEANUP_WHAT=etcd
  make_pki "$dir/pki"
  admin=$(openssl rand -hex 16)
  user=$(openssl rand -hex 16)
  (
    umask 077
    printf '%s,admin,uid-admin,"system:masters"\n%s,nobody-user,uid-nobody-user\n' \
      "$admin" "$user" >"$dir/tokens.csv"
  )
  : >"$dir/etcd.log"
  # Fixed ports: the namespace is the lab's own. The apiservers reach it over
  # the lab bridge, as control-plane nodes reach an external etcd.
  spawn "$dir" etcd ip netns exec "$ns" etcd --name havip --data-dir "$dir/etcd" \
    --listen-client-urls "http://$addr:2379,http://127.0.0.1:2379" \
    --advertise-client-urls "http://$addr:2379" \
    --listen-peer-urls "http://127.0.0.1:2380" \
    --initial-advertise-peer-urls "http://127.0.0.1:2380" \
    --initial-cluster "havip=http://127.0.0.1:2380" \
    --initial-cluster-state new --initial-cluster-token "havip-$$-$RANDOM" \
    --logger zap --log-level warn --quota-backend-bytes 1073741824 \
    --heartbeat-interval 20 --election-timeout 200 --snapshot-count 10000 --auto-compaction-retention 1h
  pid=$(cat "$dir/etcd.pid")
  for ((i = 0; i < 300; i++)); do
    if ! proc_alive "$pid"; then
      tail_log "$dir/etcd.log"
      die "etcd exited during start-up in $ns"
    fi
    if in_ns "$ns" curl -fsS -m 1 "http://$addr:2379/health" 2>/dev/null | grep -q '"health":"true"'; then
      break
    fi
    sleep 0.1
  done
  if [ "$i" -ge 300 ]; then
    tail_log "$dir/etcd.log"
    die "etcd not healthy after 30 s in $ns"
  fi
  kversion=$("$bin" --version 2>/dev/null | awk '{ print $2 }') || true
  cat >"$dir/state" <<EOF
ETCD_NS=$ns
ETCD_ADDR=$addr
ADMIN_TOKEN=$admin
USER_TOKEN=$user
BIN=$bin
KVERSION=$kversion
EOF
  cat >"$dir/env" <<EOF
KUBE_DIR=$dir
KUBE_CA=$dir/pki/serving-ca.crt
KUBE_ADMIN_TOKEN=$admin
KUBE_USER_TOKEN=$user
KUBE_CLIENT_CA=$dir/pki/client-ca.crt
KUBE_CLIENT_CA_KEY=$dir/pki/client-ca.key
KUBE_CLIENT_CERT=$dir/pki/ha-vip-node.crt
KUBE_CLIENT_KEY=$dir/pki/ha-vip-node.key
KUBE_CLIENT_USER=ha-vip-node
KUBE_ADMIN_CERT=$dir/pki/admin.crt
KUBE_ADMIN_KEY=$dir/pki/admin.key
ETCD_ENDPOINT=http://$addr:2379
ETCD_NS=$ns
ETCD_PID=$pid
KUBE_APISERVER_BIN=$bin
KUBE_VERSION=$kversion
EOF
  CLEANUP_DIR=''
  log "lab etcd ready in $(($(now_ms) - t0)) ms (with certs) in $ns at http://$addr:2379"
}

# A node's serving cert, signed by the shared serving CA. A random serial
# instead of -CAcreateserial: nodes start in parallel.
lab_serving_cert() { # DIR NODE_DIR SAN
  local dir=$1 nd=$2 san=$3
  (
    umask 077
    cd "$nd/pki"
    printf '%s\n' "basicConstraints=critical,CA:FALSE" \
      "keyUsage=critical,digitalSignature,keyEncipherment" \
      "extendedKeyUsage=serverAuth" "subjectAltName=$san" >apiserver.ext
    ossl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout apiserver.key -out apiserver.csr -subj /CN=kube-apiserver
    ossl x509 -req -in apiserver.csr -CA "$dir/pki/serving-ca.crt" -CAkey "$dir/pki/serving-ca.key" \
      -set_serial "0x$(openssl rand -hex 12)" -days 3650 -sha256 -extfile apiserver.ext -out apiserver.crt
    rm -f apiserver.csr apiserver.ext
    chmod 644 apiserver.crt
  ) || die "generating the serving certificate in $nd/pki failed"
}

cmd_lab_apiserver() { # DIR NAME NETNS ADDR [SAN_IP...]
  local dir name=${2:-} ns=${3:-} addr=${4:-} nd t0 t_end san ip code pid
  dir=$(abs_dir "${1:-}")
  [ -n "$name" ] && [ -n "$ns" ] && [ -n "$addr" ] || die "usage: lab-apiserver DIR NAME NETNS ADDR [SAN_IP...]"
  load_state "$dir"
  live_pid "$dir" etcd >/dev/null || die "etcd of $dir is not running (lab-etcd first)"
  nd=$dir/$name
  mkdir -p "$nd/pki"
  if live_pid "$nd" kube-apiserver >/dev/null; then
    log "kube-apiserver of $name already running"
    return 0
  fi
  t0=$(now_ms)
  if [ ! -s "$nd/pki/apiserver.crt" ]; then
    san="DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:10.0.0.1,IP:$addr"
    for ip in "${@:5}"; do san="$san,IP:$ip"; done
    lab_serving_cert "$dir" "$nd" "$san"
  fi
  # What kubeadm's static pod sets, where it matters here: bind on every
  # address (the default), advertise the node address, the lease endpoint
  # reconciler (the default: endpoints/kubernetes lists every live
  # apiserver), and no --shutdown-delay-duration (0s: on SIGTERM /readyz
  # fails and the listener closes at once, in-flight requests drain).
  cat >"$nd/kube-apiserver.args" <<EOF
--bind-address=0.0.0.0
--advertise-address=$addr
--secure-port=6443
--insecure-port=0
--etcd-servers=http://$ETCD_ADDR:2379
--cert-dir=$nd/pki
--tls-cert-file=$nd/pki/apiserver.crt
--tls-private-key-file=$nd/pki/apiserver.key
--client-ca-file=$dir/pki/client-ca.crt
--token-auth-file=$dir/tokens.csv
--authorization-mode=RBAC
--service-account-issuer=https://kubernetes.default.svc.cluster.local
--service-account-key-file=$dir/pki/sa.pub
--service-account-signing-key-file=$dir/pki/sa.key
--service-cluster-ip-range=10.0.0.0/24
--endpoint-reconciler-type=lease
--shutdown-delay-duration=${HAVIP_SHUTDOWN_DELAY:-0s}
--enable-priority-and-fairness=false
--profiling=false
--logtostderr=true
--v=1
EOF
  local -a args
  mapfile -t args <"$nd/kube-apiserver.args"
  echo "==== $(date -u +%FT%T.%3NZ) start" >>"$nd/kube-apiserver.log"
  CLEANUP_DIR=$nd
  CLEANUP_WHAT=kube-apiserver
  # ip netns exec execs (no fork): the pid file holds the apiserver's pid.
  spawn "$nd" kube-apiserver ip netns exec "$ns" "$BIN" "${args[@]}"
  pid=$(cat "$nd/kube-apiserver.pid")
  t_end=$((SECONDS + ${HAVIP_START_TIMEOUT:-60}))
  while :; do
    if ! proc_alive "$pid"; then
      tail_log "$nd/kube-apiserver.log"
      die "kube-apiserver of $name exited during start-up (log: $nd/kube-apiserver.log)"
    fi
    code=$(in_ns "$ns" curl -sS -o /dev/null -w '%{http_code}' -m 2 --cacert "$dir/pki/serving-ca.crt" \
      -H "Authorization: Bearer $ADMIN_TOKEN" "https://127.0.0.1:6443/readyz" 2>/dev/null) || true
    [ "$code" = 200 ] && break
    if [ "$SECONDS" -ge "$t_end" ]; then
      log "kube-apiserver of $name not ready after ${HAVIP_START_TIMEOUT:-60} s; last /readyz (HTTP $code):"
      in_ns "$ns" curl -sS -m 2 --cacert "$dir/pki/serving-ca.crt" -H "Authorization: Bearer $ADMIN_TOKEN" \
        "https://127.0.0.1:6443/readyz?verbose" 2>&1 | grep -v '\[+\]' >&2 || true
      tail_log "$nd/kube-apiserver.log"
      die "kube-apiserver of $name start-up timed out (log: $nd/kube-apiserver.log)"
    fi
    sleep 0.1
  done
  CLEANUP_DIR=''
  log "kube-apiserver of $name ready in $(($(now_ms) - t0)) ms in $ns at https://$addr:6443 (pid $pid)"
}

cmd_lab_stop() {
  local dir d
  dir=$(abs_dir "${1:-}")
  for d in "$dir"/*/; do
    if [ -f "$d/kube-apiserver.pid" ]; then stop_proc "${d%/}" kube-apiserver & fi
  done
  wait
  stop_proc "$dir" etcd
}

usage() {
  sed -n '2,/^set -euo/p' "$SELF" | sed -e '$d' -e 's/^# \{0,1\}//'
}

case "${1:-}" in
  build) cmd_build ;;
  start) cmd_start "${2:-}" ;;
  stop) cmd_stop "${2:-}" ;;
  start-apiserver) cmd_start_apiserver "${2:-}" ;;
  stop-apiserver) cmd_stop_apiserver "${2:-}" ;;
  restart-apiserver)
    cmd_stop_apiserver "${2:-}"
    cmd_start_apiserver "${2:-}"
    ;;
  start-peer) cmd_start_peer "${@:2}" ;;
  stop-peer) stop_proc "$(abs_dir "${2:-}")" "${3:?usage: stop-peer DIR NAME}" ;;
  env)
    d=$(abs_dir "${2:-}")
    [ -f "$d/env" ] || die "$d/env does not exist"
    cat "$d/env"
    ;;
  status) cmd_status "${2:-}" ;;
  kubectl) cmd_kubectl "${@:2}" ;;
  lab-etcd) cmd_lab_etcd "${@:2}" ;;
  lab-apiserver) cmd_lab_apiserver "${@:2}" ;;
  lab-stop) cmd_lab_stop "${2:-}" ;;
  -h | --help | help) usage ;;
  *)
    usage >&2
    exit 2
    ;;
esac
