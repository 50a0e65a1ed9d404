# %postun of popfetch, like %systemd_postun_with_restart: reload units; after an upgrade,
# restart the service if it was running. RPM has no purge: /var/lib/popfetch (state, and
# possibly mail someone put there) and the user popfetch stay after `rpm -e`.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart popfetch.service >/dev/null 2>&1 || :
    fi
fi
