# ha-vip %preun ($1: 0 on erase, 1 on upgrade): on erase, stop the daemon
# (a handover: the VIPs go, the Lease is released) and disable it. On
# upgrade it keeps running; %postun restarts it with the new binary.
if [ "$1" -eq 0 ]; then
	if [ -d /run/systemd/system ]; then
		systemctl --no-reload disable --now ha-vip.service >/dev/null 2>&1 || :
	else
		rm -f /etc/systemd/system/multi-user.target.wants/ha-vip.service
	fi
fi
exit 0
