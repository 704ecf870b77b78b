#!/usr/bin/env bash
# package-check: installs the .deb built by `make deb` on this machine and
# the .rpm built by `make rpm` into a scratch root, checks their files,
# modes, conffiles and maintainer scripts, lints the .deb, upgrades over a
# modified configuration, and removes both again.
#
#   bash packaging/check-packages.sh DEB RPM VERSION     (run by make package-check)
#
# Needs root (dpkg -i) and dpkg-deb, lintian, rpm, man (make deps installs
# them). Nothing is skipped: a missing prerequisite is a failure. It refuses
# to run where a package named ha-vip is installed already, and purges its
# own installation on any exit.
set -euo pipefail

DEB=${1:?usage: check-packages.sh DEB RPM VERSION}
RPM=${2:?usage: check-packages.sh DEB RPM VERSION}
VERSION=${3:?usage: check-packages.sh DEB RPM VERSION}
SRC=$(cd "$(dirname "$0")/.." && pwd)

checks=0
fail() {
	echo "package-check: FAILED: $*" >&2
	exit 1
}
ok() {
	checks=$((checks + 1))
	echo "ok $checks - $*"
}
# same FILE_A FILE_B WHAT: byte-identical, else show the diff.
same() {
	diff -u "$1" "$2" >&2 || fail "$3 differs from the source"
}

# ---- prerequisites --------------------------------------------------------

[ "$(id -u)" = 0 ] || fail "needs root (dpkg -i installs into /usr and /etc)"
for tool in dpkg dpkg-deb dpkg-query deb-systemd-helper lintian rpm man md5sum; do
	command -v "$tool" >/dev/null || fail "$tool is missing: run make deps"
done
[ -f "$DEB" ] || fail "$DEB not found: run make deb"
[ -f "$RPM" ] || fail "$RPM not found: run make rpm"
if dpkg-query -W -f='${Status}' ha-vip 2>/dev/null | grep -qv 'not-installed'; then
	fail "a package ha-vip is installed on this machine already; dpkg --purge ha-vip first"
fi
[ ! -e /usr/bin/ha-vip ] || fail "/usr/bin/ha-vip exists and belongs to no package: remove it first"
[ ! -e /etc/ha-vip ] || fail "/etc/ha-vip exists: move it away first (purge would delete it)"

WORK=$(mktemp -d)
WANTS=/etc/systemd/system/multi-user.target.wants/ha-vip.service
cleanup() {
	status=$?
	if dpkg-query -W -f='${Status}' ha-vip 2>/dev/null | grep -qv 'not-installed'; then
		dpkg --purge ha-vip >/dev/null 2>&1 || echo "package-check: could not purge ha-vip" >&2
	fi
	rm -f "$WANTS"
	rm -rf "$WORK"
	exit "$status"
}
trap cleanup EXIT

# ---- the .deb, unopened ---------------------------------------------------

echo "== $DEB"
info=$(dpkg-deb -I "$DEB")
field() { dpkg-deb -f "$DEB" "$1"; }
[ "$(field Package)" = ha-vip ] || fail "Package: $(field Package)"
[ "$(field Version)" = "$VERSION-1" ] || fail "Version: $(field Version), Cargo.toml says $VERSION"
[ "$(field Architecture)" = "$(dpkg --print-architecture)" ] || fail "Architecture: $(field Architecture)"
[ "$(field Section)" = net ] || fail "Section: $(field Section)"
field Depends | grep -q 'libc6 (>= ' || fail "Depends lacks libc6: $(field Depends)"
field Maintainer | grep -q '<.*@.*>' || fail "Maintainer without an address"
field Description | grep -q 'not enabled on installation' || fail "Description does not say the service is not enabled"
ok "control: ha-vip $VERSION-1 $(field Architecture), Depends: $(field Depends)"

# The changelog's newest entry is this version (lintian does not compare).
changelog_version=$(sed -n '1s/^ha-vip (\(.*\)) .*/\1/p' "$SRC/packaging/deb/changelog")
[ "$changelog_version" = "$VERSION-1" ] ||
	fail "packaging/deb/changelog starts with $changelog_version, the package is $VERSION-1: add an entry"
ok "packaging/deb/changelog names $VERSION-1"

mkdir "$WORK/control"
dpkg-deb -e "$DEB" "$WORK/control"
[ "$(cat "$WORK/control/conffiles")" = /etc/ha-vip/config.yaml ] ||
	fail "conffiles: $(cat "$WORK/control/conffiles")"
# code FILE: the script without comments and here-document bodies (the
# operator message names `systemctl enable`).
code() {
	awk '/<<[A-Z]+$/ { print; doc = 1; next }
		doc && /^[A-Z]+$/ { doc = 0; next }
		doc || /^[[:space:]]*#/ { next }
		{ print }' "$1"
}
# guarded NAME FILE: every call that needs a running systemd (systemctl,
# deb-systemd-invoke) sits in the branch of an `if`/`elif [ -d
# /run/systemd/system ]`, and nothing enables or starts the service
# (try-restart only restarts a running one).
guarded() {
	code "$2" | awk -v s="$1" '
		BEGIN { G = "\\[ -d /run/systemd/system \\]" }
		/^[[:space:]]*if / { depth++; if ($0 ~ G) guard = depth }
		/^[[:space:]]*elif / { if (guard == depth) guard = 0; if ($0 ~ G) guard = depth }
		/^[[:space:]]*else([[:space:]]|$)/ { if (guard == depth) guard = 0 }
		/systemctl|deb-systemd-invoke/ && !guard { print s ": unguarded: " $0; bad = 1 }
		/^[[:space:]]*fi([[:space:];]|$)/ { if (guard == depth) guard = 0; depth-- }
		END { exit bad }' || fail "$1 calls systemd outside [ -d /run/systemd/system ]"
	if code "$2" | grep -Eq '(^|[;&|]|then|else)[[:space:]]*(systemctl|deb-systemd-helper|deb-systemd-invoke)[^;&|]*[[:space:]](enable|start|restart|reenable)([[:space:]]|$)'; then
		fail "$1 enables, starts or restarts the service"
	fi
}
for script in postinst prerm postrm; do
	[ "$(stat -c %a "$WORK/control/$script")" = 755 ] || fail "$script is not mode 0755"
	same "$SRC/packaging/deb/$script" "$WORK/control/$script" "$script"
	sh -n "$WORK/control/$script" || fail "$script: shell syntax"
	guarded "$script" "$WORK/control/$script"
done
ok "conffiles: /etc/ha-vip/config.yaml; postinst/prerm/postrm 0755, systemd calls guarded, nothing enabled"

# Exactly these files, with these modes and owners.
dpkg-deb -c "$DEB" | awk '$1 !~ /^d/ { print $1, $2, $6 }' | sort >"$WORK/deb-files"
sort >"$WORK/deb-expected" <<EOF
-rwxr-xr-x 0/0 ./usr/bin/ha-vip
-rw-r--r-- 0/0 ./lib/systemd/system/ha-vip.service
-rw-r----- 0/0 ./etc/ha-vip/config.yaml
-rw-r--r-- 0/0 ./usr/share/doc/ha-vip/README.md
-rw-r--r-- 0/0 ./usr/share/doc/ha-vip/changelog.Debian.gz
-rw-r--r-- 0/0 ./usr/share/doc/ha-vip/copyright
-rw-r--r-- 0/0 ./usr/share/doc/ha-vip/operations.md
-rw-r--r-- 0/0 ./usr/share/doc/ha-vip/rbac.yaml
-rw-r--r-- 0/0 ./usr/share/doc/ha-vip/virtualip-crd.yaml
-rw-r--r-- 0/0 ./usr/share/lintian/overrides/ha-vip
-rw-r--r-- 0/0 ./usr/share/man/man8/ha-vip.8.gz
-rw-r--r-- 0/0 ./usr/share/man/man8/ha-vip-run.8.gz
-rw-r--r-- 0/0 ./usr/share/man/man8/ha-vip-check-config.8.gz
-rw-r--r-- 0/0 ./usr/share/man/man8/ha-vip-status.8.gz
-rw-r--r-- 0/0 ./usr/share/man/man8/ha-vip-release.8.gz
-rw-r--r-- 0/0 ./usr/share/man/man8/ha-vip-version.8.gz
-rw-r--r-- 0/0 ./usr/share/man/man8/ha-vip-credential.8.gz
-rw-r--r-- 0/0 ./usr/share/man/man8/ha-vip-credential-issue.8.gz
-rw-r--r-- 0/0 ./usr/share/man/man8/ha-vip-drain.8.gz
-rw-r--r-- 0/0 ./usr/share/man/man8/ha-vip-undrain.8.gz
-rw-r--r-- 0/0 ./usr/share/man/man8/ha-vip-handover.8.gz
-rw-r--r-- 0/0 ./usr/share/bash-completion/completions/ha-vip
-rw-r--r-- 0/0 ./usr/share/zsh/vendor-completions/_ha-vip
-rw-r--r-- 0/0 ./usr/share/fish/vendor_completions.d/ha-vip.fish
EOF
diff -u "$WORK/deb-expected" "$WORK/deb-files" >&2 || fail "the .deb's files or modes differ from the expected list (- expected, + packaged)"
ok "dpkg-deb -c: the $(wc -l <"$WORK/deb-expected") expected files, modes and owners"

# ---- lintian --------------------------------------------------------------

# Errors and warnings fail; overrides are in packaging/deb/lintian-overrides,
# each with its reason. Informational tags are printed for the record.
if lintian --fail-on error,warning --display-info "$DEB" >"$WORK/lintian.txt" 2>&1; then lint=0; else lint=$?; fi
grep -v 'running with root privileges' "$WORK/lintian.txt" >&2 || true
[ "$lint" = 0 ] || fail "lintian reports errors or warnings (above; exit $lint)"
ok "lintian: no errors or warnings"

# ---- install --------------------------------------------------------------

dpkg -i "$DEB" >"$WORK/install.log" 2>&1 || { cat "$WORK/install.log" >&2; fail "dpkg -i"; }
grep -q 'ha-vip is installed but not enabled' "$WORK/install.log" ||
	{ cat "$WORK/install.log" >&2; fail "postinst did not tell the operator to configure before enabling"; }
[ "$(dpkg-query -W -f='${Status} ${Version}' ha-vip)" = "install ok installed $VERSION-1" ] ||
	fail "dpkg-query: $(dpkg-query -W -f='${Status} ${Version}' ha-vip)"
ok "dpkg -i: installed, with the 'configure before enabling' message"

for f in /usr/bin/ha-vip:755 /etc/ha-vip/config.yaml:640 /lib/systemd/system/ha-vip.service:644 \
	/usr/share/doc/ha-vip/rbac.yaml:644 /usr/share/man/man8/ha-vip.8.gz:644; do
	path=${f%:*} mode=${f##*:}
	[ "$(stat -c '%a %U:%G' "$path")" = "$mode root:root" ] ||
		fail "$path is $(stat -c '%a %U:%G' "$path"), expected $mode root:root"
done
same "$SRC/config/config.yaml" /etc/ha-vip/config.yaml /etc/ha-vip/config.yaml
same "$SRC/systemd/ha-vip.service" /lib/systemd/system/ha-vip.service /lib/systemd/system/ha-vip.service
same "$SRC/packaging/kubernetes/rbac.yaml" /usr/share/doc/ha-vip/rbac.yaml /usr/share/doc/ha-vip/rbac.yaml
same "$SRC/packaging/kubernetes/virtualip-crd.yaml" /usr/share/doc/ha-vip/virtualip-crd.yaml /usr/share/doc/ha-vip/virtualip-crd.yaml
dpkg-query -W -f='${Conffiles}\n' ha-vip | grep -q "^ /etc/ha-vip/config.yaml $(md5sum </etc/ha-vip/config.yaml | cut -d' ' -f1)\$" ||
	fail "dpkg-query does not list /etc/ha-vip/config.yaml as a conffile with its checksum"
ok "installed files: modes, owners and contents; config.yaml registered as a conffile"

[ "$(/usr/bin/ha-vip version)" = "ha-vip $VERSION" ] || fail "ha-vip version: $(/usr/bin/ha-vip version)"
/usr/bin/ha-vip check-config /etc/ha-vip/config.yaml >"$WORK/check.out" 2>"$WORK/check.err" ||
	{ cat "$WORK/check.out" "$WORK/check.err" >&2; fail "the installed example does not pass check-config"; }
ok "the installed binary runs; the installed example passes check-config ($(wc -l <"$WORK/check.err") warning lines)"

MANWIDTH=100 man 8 ha-vip >"$WORK/man.txt" 2>"$WORK/man.err" || fail "man 8 ha-vip: $(cat "$WORK/man.err")"
for text in SYNOPSIS 'EXIT STATUS' SIGNALS FILES ha-vip-check-config /etc/ha-vip/config.yaml; do
	grep -q -- "$text" "$WORK/man.txt" || fail "man 8 ha-vip does not show '$text'"
done
MANWIDTH=100 man 8 ha-vip-run | grep -q -- '--config' || fail "man 8 ha-vip-run does not show --config"
ok "man 8 ha-vip and man 8 ha-vip-run render"

# The bash completion completes subcommands and options.
completion=$(
	bash -c '
		source /usr/share/bash-completion/completions/ha-vip
		fn=$(complete -p ha-vip | sed -n "s/.*-F \([^ ]*\).*/\1/p")
		COMP_WORDS=(ha-vip che); COMP_CWORD=1; COMP_LINE="ha-vip che"; COMP_POINT=${#COMP_LINE}
		"$fn" ha-vip che ha-vip; echo "${COMPREPLY[*]}"
		COMP_WORDS=(ha-vip status --); COMP_CWORD=2; COMP_LINE="ha-vip status --"; COMP_POINT=${#COMP_LINE}
		"$fn" ha-vip -- status; echo "${COMPREPLY[*]}"'
)
[ "$(sed -n 1p <<<"$completion")" = check-config ] || fail "bash completion of 'ha-vip che': $completion"
grep -q -- '--json' <<<"$(sed -n 2p <<<"$completion")" || fail "bash completion of 'ha-vip status --': $completion"
grep -q 'check-config' /usr/share/zsh/vendor-completions/_ha-vip || fail "zsh completion lacks check-config"
grep -q 'check-config' /usr/share/fish/vendor_completions.d/ha-vip.fish || fail "fish completion lacks check-config"
ok "bash completion completes 'che' and 'status --'; zsh and fish name the commands"

# ---- upgrade over a modified configuration ----------------------------------

# The operator's edit survives an upgrade that ships a changed example: the
# new example lands next to it as config.yaml.dpkg-dist.
echo "# edited by the operator" >>/etc/ha-vip/config.yaml
edited=$(md5sum </etc/ha-vip/config.yaml)
dpkg-deb -R "$DEB" "$WORK/next"
echo "# changed in the next version" >>"$WORK/next/etc/ha-vip/config.yaml"
sed -i "s/^Version: .*/Version: $VERSION-2/" "$WORK/next/DEBIAN/control"
dpkg-deb -b --root-owner-group "$WORK/next" "$WORK/next.deb" >/dev/null
dpkg -i --force-confdef --force-confold "$WORK/next.deb" >"$WORK/upgrade.log" 2>&1 </dev/null ||
	{ cat "$WORK/upgrade.log" >&2; fail "upgrade to $VERSION-2"; }
[ "$(md5sum </etc/ha-vip/config.yaml)" = "$edited" ] || fail "the upgrade overwrote the operator's config.yaml"
grep -q 'changed in the next version' /etc/ha-vip/config.yaml.dpkg-dist || fail "no config.yaml.dpkg-dist with the new example"
[ "$(stat -c %a /etc/ha-vip/config.yaml)" = 640 ] || fail "the upgrade changed config.yaml's mode"
! grep -q 'installed but not enabled' "$WORK/upgrade.log" || fail "the upgrade printed the fresh-install message"
ok "upgrade to $VERSION-2 keeps the edited conffile (new example as .dpkg-dist, mode 0640)"

# ---- remove and purge -----------------------------------------------------

# What `systemctl enable` would leave, so that purge must clean it up.
mkdir -p "$(dirname "$WANTS")"
ln -sf /lib/systemd/system/ha-vip.service "$WANTS"

dpkg -r ha-vip >"$WORK/remove.log" 2>&1 || { cat "$WORK/remove.log" >&2; fail "dpkg -r"; }
[ ! -e /usr/bin/ha-vip ] || fail "dpkg -r left /usr/bin/ha-vip"
[ ! -e /lib/systemd/system/ha-vip.service ] || fail "dpkg -r left the unit"
[ -f /etc/ha-vip/config.yaml ] || fail "dpkg -r removed the conffile (only purge may)"
[ "$(dpkg-query -W -f='${Status}' ha-vip)" = "deinstall ok config-files" ] ||
	fail "after dpkg -r: $(dpkg-query -W -f='${Status}' ha-vip)"
ok "dpkg -r: binary and unit gone, configuration kept"

echo "token" >/etc/ha-vip/token
dpkg --purge ha-vip >"$WORK/purge.log" 2>&1 || { cat "$WORK/purge.log" >&2; fail "dpkg --purge"; }
[ ! -e /etc/ha-vip ] || fail "purge left /etc/ha-vip: $(ls -A /etc/ha-vip)"
[ ! -L "$WANTS" ] || fail "purge left the enablement symlink $WANTS"
dpkg-query -W -f='${Status}' ha-vip 2>/dev/null | grep -qv 'not-installed' && fail "ha-vip still known to dpkg after purge"
for path in /usr/bin/ha-vip /usr/share/doc/ha-vip /usr/share/man/man8/ha-vip.8.gz \
	/usr/share/bash-completion/completions/ha-vip /usr/share/lintian/overrides/ha-vip; do
	[ ! -e "$path" ] || fail "purge left $path"
done
ok "dpkg --purge: /etc/ha-vip (with an added token file) and the enablement symlink gone, nothing left"

# ---- the .rpm -------------------------------------------------------------

# Debian's rpm warns on every write that alien should be used instead.
rpm_flags=()
if rpm --help 2>/dev/null | grep -q -- --force-debian; then rpm_flags=(--force-debian); fi

echo "== $RPM"
q() { rpm -qp --qf "$1" "$RPM" 2>/dev/null; }
[ "$(q '%{NAME} %{VERSION} %{RELEASE} %{ARCH} %{LICENSE}')" = "ha-vip $VERSION 1 $(uname -m) Apache-2.0" ] ||
	fail "rpm header: $(q '%{NAME} %{VERSION} %{RELEASE} %{ARCH} %{LICENSE}')"
rpm -qpR "$RPM" 2>/dev/null | grep -q '^libc.so.6' || fail "rpm requires no libc.so.6"
ok "rpm header: ha-vip $VERSION-1 $(uname -m) Apache-2.0, requires libc.so.6"

# mode, owner, group, file flags (c config, n noreplace, d doc), path.
q '[%{FILEMODES:perms} %{FILEUSERNAME} %{FILEGROUPNAME} %{FILEFLAGS:fflags} %{FILENAMES}\n]' |
	awk '{ if (NF == 4) { $5 = $4; $4 = "-" } print }' | sort >"$WORK/rpm-files"
sort >"$WORK/rpm-expected" <<EOF
-rwxr-xr-x root root - /usr/bin/ha-vip
-rw-r--r-- root root - /usr/lib/systemd/system/ha-vip.service
-rw-r----- root root cn /etc/ha-vip/config.yaml
-rw-r--r-- root root d /usr/share/doc/ha-vip/README.md
-rw-r--r-- root root d /usr/share/doc/ha-vip/operations.md
-rw-r--r-- root root d /usr/share/doc/ha-vip/rbac.yaml
-rw-r--r-- root root d /usr/share/doc/ha-vip/virtualip-crd.yaml
-rw-r--r-- root root d /usr/share/man/man8/ha-vip.8.gz
-rw-r--r-- root root d /usr/share/man/man8/ha-vip-run.8.gz
-rw-r--r-- root root d /usr/share/man/man8/ha-vip-check-config.8.gz
-rw-r--r-- root root d /usr/share/man/man8/ha-vip-status.8.gz
-rw-r--r-- root root d /usr/share/man/man8/ha-vip-release.8.gz
-rw-r--r-- root root d /usr/share/man/man8/ha-vip-version.8.gz
-rw-r--r-- root root d /usr/share/man/man8/ha-vip-credential.8.gz
-rw-r--r-- root root d /usr/share/man/man8/ha-vip-credential-issue.8.gz
-rw-r--r-- root root d /usr/share/man/man8/ha-vip-drain.8.gz
-rw-r--r-- root root d /usr/share/man/man8/ha-vip-undrain.8.gz
-rw-r--r-- root root d /usr/share/man/man8/ha-vip-handover.8.gz
-rw-r--r-- root root - /usr/share/bash-completion/completions/ha-vip
-rw-r--r-- root root - /usr/share/zsh/site-functions/_ha-vip
-rw-r--r-- root root - /usr/share/fish/vendor_completions.d/ha-vip.fish
EOF
diff -u "$WORK/rpm-expected" "$WORK/rpm-files" >&2 || fail "the .rpm's files, modes or flags differ from the expected list (- expected, + packaged)"
ok "rpm -qp: the $(wc -l <"$WORK/rpm-expected") expected files; config.yaml %config(noreplace) 0640"

# The scriptlets are ours, and run cleanly here, where systemd is not PID 1.
for pair in POSTIN:post PREUN:preun POSTUN:postun; do
	tag=${pair%:*} file=${pair#*:}
	q "%{$tag}" >"$WORK/$file.sh"
	same "$SRC/packaging/rpm/$file.sh" "$WORK/$file.sh" "rpm %$file scriptlet"
	guarded "%$file" "$WORK/$file.sh"
	[ "$(q "%{${tag}PROG}")" = /bin/sh ] || fail "%$file runs with $(q "%{${tag}PROG}")"
done
sh "$WORK/post.sh" 1 | grep -q 'installed but not enabled' || fail "%post 1 does not print the configure message"
[ -z "$(sh "$WORK/post.sh" 2)" ] || fail "%post 2 (upgrade) prints the fresh-install message"
sh "$WORK/preun.sh" 1 && sh "$WORK/postun.sh" 1 || fail "upgrade scriptlets fail without systemd"
ok "rpm scriptlets are packaging/rpm/*.sh, /bin/sh, and run without systemd"

# Install into a scratch root (scriptlets need a shell inside it, so they
# ran above instead), edit the config, upgrade, erase.
ROOT=$WORK/rpmroot
rpm --root "$ROOT" --initdb
rpm "${rpm_flags[@]}" --root "$ROOT" -i --nodeps --noscripts "$RPM" || fail "rpm -i into $ROOT"
for f in /usr/bin/ha-vip:755 /etc/ha-vip/config.yaml:640 /usr/lib/systemd/system/ha-vip.service:644; do
	path=${f%:*} mode=${f##*:}
	[ "$(stat -c %a "$ROOT$path")" = "$mode" ] || fail "$path is $(stat -c %a "$ROOT$path") after rpm -i"
done
same "$SRC/config/config.yaml" "$ROOT/etc/ha-vip/config.yaml" "rpm-installed config.yaml"
"$ROOT/usr/bin/ha-vip" check-config "$ROOT/etc/ha-vip/config.yaml" >/dev/null 2>&1 ||
	fail "the rpm's example does not pass check-config"
echo "# edited by the operator" >>"$ROOT/etc/ha-vip/config.yaml"
edited=$(md5sum <"$ROOT/etc/ha-vip/config.yaml")
rpm "${rpm_flags[@]}" --root "$ROOT" -U --replacepkgs --nodeps --noscripts "$RPM" || fail "rpm -U into $ROOT"
[ "$(md5sum <"$ROOT/etc/ha-vip/config.yaml")" = "$edited" ] || fail "rpm -U overwrote the edited config.yaml"
rpm "${rpm_flags[@]}" --root "$ROOT" -e --noscripts ha-vip || fail "rpm -e"
[ ! -e "$ROOT/usr/bin/ha-vip" ] || fail "rpm -e left /usr/bin/ha-vip"
[ -f "$ROOT/etc/ha-vip/config.yaml.rpmsave" ] || fail "rpm -e did not keep the edited config as config.yaml.rpmsave"
ok "rpm -i/-U/-e in a scratch root: modes, edited config kept on upgrade, saved as .rpmsave on erase"

echo "package-check: $checks passed, 0 failed"
