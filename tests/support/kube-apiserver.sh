#!/usr/bin/env bash
# build section only (work in progress)
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

CACHE=${HAVIP_CACHE:-/var/cache/ha-vip-test}
APT_DIR=$CACHE/apt
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

log() { printf '[kube-apiserver.sh] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else die "need root for: $*"; fi
}

# ---------------------------------------------------------------- build ----

# Read the Debian mirror and suites from the system's deb822 sources.
debian_mirror() {
  local f=/etc/apt/sources.list.d/debian.sources uri="" suites=""
  if [ -r "$f" ]; then
    # first stanza whose URI ends in /debian (not debian-security)
    read -r uri suites < <(awk '
      /^[[:space:]]*$/ { if (u ~ /\/debian\/?$/ && s != "") { print u, s; found=1; exit } u=""; s=""; next }
      /^URIs:/   { u=$2 }
      /^Suites:/ { s=$2; for (i=3;i<=NF;i++) s=s" "$i }
      END { if (!found && u ~ /\/debian\/?$/ && s != "") print u, s }' "$f") || true
  fi
  printf '%s %s\n' "${uri:-http://deb.debian.org/debian}" "${suites:-bookworm}"
}

apt_private() {
  apt-get -q -o Dir::Etc::SourceList="$APT_DIR/sources.list" \
    -o Dir::Etc::SourceParts="$APT_DIR/sources.list.d" \
    -o Dir::State::Lists="$APT_DIR/lists" \
    -o Dir::Cache="$APT_DIR/cache" \
    -o APT::Get::List-Cleanup=0 "$@"
}
apt_cache_private() {
  apt-cache -o Dir::Etc::SourceList="$APT_DIR/sources.list" \
    -o Dir::Etc::SourceParts="$APT_DIR/sources.list.d" \
    -o Dir::State::Lists="$APT_DIR/lists" \
    -o Dir::Cache="$APT_DIR/cache" "$@"
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
}

# newest version of the kubernetes source package in the private lists
kube_src_version() {
  apt_cache_private showsrc kubernetes 2>/dev/null |
    awk '/^Version:/ {print $2}' | sort -V | tail -n1
}

ensure_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  if ! as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
    as_root apt-get update -qq >/dev/null 2>&1 || true
    as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
      die "apt-get install ${missing[*]} failed"
  fi
}

cmd_build() {
  mkdir -p "$CACHE"
  exec 9>"$CACHE/build.lock"
  flock 9
  ensure_packages etcd-server openssl curl ca-certificates

  setup_private_apt
  local ver
  ver=$(kube_src_version || true)
  if [ -n "$ver" ] && [ -x "$CACHE/kube-apiserver-$ver/kube-apiserver" ]; then
    log "cached: kube-apiserver $ver"
    echo "$CACHE/kube-apiserver-$ver/kube-apiserver"
    return 0
  fi

  log "apt-get update (private deb-src lists in $APT_DIR)"
  apt_private update -qq >/dev/null 2>"$APT_DIR/update.err" || {
    cat "$APT_DIR/update.err" >&2; die "private apt-get update failed"; }
  ver=$(kube_src_version)
  [ -n "$ver" ] || die "no 'kubernetes' source package found in $(cat "$APT_DIR/sources.list")"
  local out=$CACHE/kube-apiserver-$ver
  if [ -x "$out/kube-apiserver" ]; then
    log "cached: kube-apiserver $ver"
    echo "$out/kube-apiserver"
    return 0
  fi

  ensure_packages golang-go rsync make dpkg-dev
  mkdir -p "$out"
  local buildlog=$out/build.log work=$out/work
  local gopath=$work/gopath src=$work/gopath/src/k8s.io/kubernetes
  : >"$buildlog"
  log "building kube-apiserver $ver (log: $buildlog)"
  local t0=$SECONDS
  if ! (
    set -euo pipefail
    if [ ! -f "$src/.havip-extracted" ]; then
      rm -rf "$work"
      mkdir -p "$work/dl" "$gopath/src/k8s.io"
      cd "$work/dl"
      echo "== apt-get source --download-only kubernetes=$ver"
      apt_private source --download-only "kubernetes=$ver"
      echo "== dpkg-source -x"
      dpkg-source --no-check -x ./kubernetes_*.dsc "$src"
      touch "$src/.havip-extracted"
    fi
    cd "$src"
    export GOPATH=$gopath GO111MODULE=off GOFLAGS= GOCACHE=$work/gocache
    if [ ! -d pkg/generated/openapi ] || [ ! -f .havip-generated ]; then
      echo "== make generated_files"
      make generated_files
      touch .havip-generated
    fi
    upstream=${ver#*really}; upstream=${upstream%%-*}
    vpkg=k8s.io/kubernetes/vendor/k8s.io/component-base/version
    ldflags="-s -w -X $vpkg.gitVersion=v$upstream -X $vpkg.gitMajor=${upstream%%.*} -X $vpkg.gitMinor=$(echo "$upstream" | cut -d. -f2) -X $vpkg.gitTreeState=clean"
    echo "== go build ./cmd/kube-apiserver ($(go version))"
    CGO_ENABLED=0 go build -ldflags "$ldflags" -o "$out/kube-apiserver.tmp" ./cmd/kube-apiserver
    mv "$out/kube-apiserver.tmp" "$out/kube-apiserver"
    if [ "${HAVIP_BUILD_KUBECTL:-0}" = 1 ]; then
      echo "== go build ./cmd/kubectl"
      CGO_ENABLED=0 go build -ldflags "$ldflags" -o "$out/kubectl" ./cmd/kubectl
    fi
  ) >>"$buildlog" 2>&1; then
    log "build FAILED; tail of $buildlog:"
    tail -n 40 "$buildlog" >&2
    exit 1
  fi
  log "built kube-apiserver $ver in $((SECONDS - t0)) s"
  echo "$out/kube-apiserver"
}

