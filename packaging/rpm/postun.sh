# ha-vip %postun ($1: 0 on erase, 1 on upgrade, run from the old package
# after the new one is in place): on upgrade restart the daemon only if it
# was running -- a planned handover -- and only if the new version accepts
# the configuration; otherwise leave the old one running.
#
# cargo-generate-rpm 0.21 cannot package a directory entry, so the package
# owns no directory: on erase remove the two it creates when they are empty
# (rpm keeps a modified configuration as config.yaml.rpmsave, and files
# the operator added, such as a token, stay too).
if [ "$1" -eq 0 ]; then
	rmdir /etc/ha-vip /usr/share/doc/ha-vip 2>/dev/null || :
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
	if [ "$1" -ge 1 ]; then
		if out=$(/usr/bin/ha-vip check-config /etc/ha-vip/config.yaml 2>&1); then
			systemctl try-restart ha-vip.service >/dev/null 2>&1 || \
				echo "ha-vip: restarting ha-vip.service failed; see journalctl -u ha-vip" >&2
		else
			echo "$out" >&2
			echo "ha-vip: /etc/ha-vip/config.yaml does not pass 'ha-vip check-config' with the new version," >&2
			echo "ha-vip: so ha-vip.service was not restarted (if it runs, the old version keeps running)." >&2
			echo "ha-vip: fix the file, then: systemctl restart ha-vip" >&2
		fi
	fi
fi
exit 0
