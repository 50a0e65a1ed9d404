#!/bin/sh
# Config load and reload at scale: ACCOUNTS accounts (default 10,000) in FILES included files
# (default 100), timed through the built binary. Not a test; run by hand:
#
#   cargo build --release && benches/config_scale/run.sh [BINARY]
#
# It reports `popfetch check` (every file read, validated and looked at), the daemon's start
# (to its "daemon started" line), a reload after one included file changed (the daemon's own
# elapsed_ms, and from the write to its "config reloaded" line, which includes the watcher's
# 300 ms debounce), and a SIGHUP reload of the unchanged config. The accounts point at a closed
# port with a day's interval and start spread, so hardly any poll runs during the measurement.
# It also reports the idle daemon's RSS, two seconds after its start and after the reloads.
set -eu
BIN=$(realpath "${1:-target/release/popfetch}")
ACCOUNTS=${ACCOUNTS:-10000}
FILES=${FILES:-100}
PER=$((ACCOUNTS / FILES))
DIR=$(mktemp -d /tmp/popfetch-config-scale.XXXXXX)
DAEMON=
trap 'if [ -n "$DAEMON" ]; then kill "$DAEMON" 2>/dev/null || true; wait "$DAEMON" 2>/dev/null || true; fi; rm -rf "$DIR"' EXIT INT TERM
mkdir -p "$DIR/conf.d" "$DIR/state" "$DIR/Maildir/tmp" "$DIR/Maildir/new" "$DIR/Maildir/cur"
chmod 700 "$DIR/state"

now_ms() { date +%s%3N; }

cat > "$DIR/config.toml" <<CONF
state_dir = "$DIR/state"
interval = "24h"
start_spread = "24h"
log_target = "stderr"
include = ["conf.d/*.toml"]

[defaults]
host = "127.0.0.1"
port = 9
tls = "none"
allow_plaintext_auth = true
password = "x"
deliver = { maildir = "$DIR/Maildir" }
CONF
f=0
while [ $f -lt $FILES ]; do
    a=0
    out="$DIR/conf.d/users-$(printf %03d $f).toml"
    while [ $a -lt $PER ]; do
        n=$((f * PER + a))
        printf '[[account]]\nname = "user%05d"\nuser = "user%05d"\n\n' $n $n
        a=$((a + 1))
    done > "$out"
    f=$((f + 1))
done
chmod 600 "$DIR/config.toml" "$DIR"/conf.d/*.toml
echo "# $ACCOUNTS accounts in $FILES included files of $PER, $(du -sh "$DIR/conf.d" | cut -f1)"

# `check` three times: the best and the worst wall time, and the peak RSS.
for i in 1 2 3; do
    /usr/bin/time -f '%e %M' -o "$DIR/time" "$BIN" -c "$DIR/config.toml" check > /dev/null 2> "$DIR/check.err" || {
        cat "$DIR/check.err"; exit 1; }
    read -r wall rss < "$DIR/time"
    echo "check run $i: ${wall} s wall, ${rss} KiB peak RSS"
done

# The daemon: start, then one file changed, then SIGHUP.
wait_for() { # PATTERN COUNT: until the log has COUNT lines matching PATTERN (30 s at most)
    i=0
    # Before the daemon created its log, grep prints nothing: that counts as 0 (an empty
    # string made the test fail at once, so the start was timed at a few milliseconds).
    while n=$(grep -c "$1" "$DIR/daemon.log" 2>/dev/null); [ "${n:-0}" -lt "$2" ]; do
        i=$((i + 1))
        [ $i -le 3000 ] || { echo "timed out waiting for: $1"; tail -5 "$DIR/daemon.log"; exit 1; }
        sleep 0.01
    done
}
t0=$(now_ms)
"$BIN" -c "$DIR/config.toml" daemon 2> "$DIR/daemon.log" &
DAEMON=$!
wait_for 'daemon started' 1
t1=$(now_ms)
echo "daemon start to 'daemon started': $((t1 - t0)) ms"
sleep 2
rss=$(awk '/VmRSS/ {print $2}' /proc/$DAEMON/status)
echo "daemon idle RSS: $rss KiB"

# One account of the first file changed: its interval.
one=$(printf user%05d $((PER / 2)))
sed -i "s/^name = \"$one\"\$/name = \"$one\"\\ninterval = \"12h\"/" "$DIR/conf.d/users-000.toml"
grep -q 'interval = "12h"' "$DIR/conf.d/users-000.toml" || { echo "the edit did not apply"; exit 1; }
t0=$(now_ms)
wait_for 'config reloaded' 1
t1=$(now_ms)
grep 'config reloaded' "$DIR/daemon.log" | tail -1
echo "one file changed, write to 'config reloaded': $((t1 - t0)) ms (300 ms of it the debounce)"

kill -HUP $DAEMON
t0=$(now_ms)
wait_for 'config reloaded' 2
t1=$(now_ms)
grep 'config reloaded' "$DIR/daemon.log" | tail -1
echo "SIGHUP, unchanged files, to 'config reloaded': $((t1 - t0)) ms"
grep -c 'account changed' "$DIR/daemon.log" | sed 's/^/accounts restarted in all: /'
echo "daemon RSS after both reloads: $(awk '/VmRSS/ {print $2}' /proc/$DAEMON/status) KiB"
