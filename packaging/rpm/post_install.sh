# %post of popfetch: the state directory, then like %systemd_post: on first install the
# distribution's presets decide whether popfetch.service is enabled. Nothing is started: the
# shipped config has no account yet.
systemd-tmpfiles --create /usr/lib/tmpfiles.d/popfetch.conf >/dev/null 2>&1 || :
if [ "$1" -eq 1 ] && [ -d /run/systemd/system ]; then
    systemctl --no-reload preset popfetch.service >/dev/null 2>&1 || :
fi
