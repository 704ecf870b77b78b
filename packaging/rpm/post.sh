# ha-vip %post ($1: 1 on install, 2 or more on upgrade): reload systemd;
# never enable or start an unconfigured service.
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ]; then
	cat <<MSG
ha-vip is installed but not enabled. Before starting it:
  1. edit /etc/ha-vip/config.yaml (interface, vips, k8s credential)
  2. ha-vip check-config /etc/ha-vip/config.yaml
  3. kubectl apply -f /usr/share/doc/ha-vip/rbac.yaml  (once per cluster)
  4. systemctl enable --now ha-vip
See /usr/share/doc/ha-vip/operations.md.
MSG
fi
exit 0
