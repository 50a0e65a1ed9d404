# %pre of popfetch: the user and group popfetch must exist before the files are laid down
# (/etc/popfetch/config.toml belongs to the group popfetch). Like %sysusers_create_compat:
# systemd-sysusers with the package's sysusers.d line, else useradd.
if command -v systemd-sysusers >/dev/null 2>&1; then
    echo 'u popfetch - "popfetch POP3 mail fetcher" /var/lib/popfetch' |
        systemd-sysusers --replace=/usr/lib/sysusers.d/popfetch.conf -
elif ! getent passwd popfetch >/dev/null; then
    useradd --system --user-group --home-dir /var/lib/popfetch --no-create-home \
        --shell /sbin/nologin --comment "popfetch POP3 mail fetcher" popfetch
fi
