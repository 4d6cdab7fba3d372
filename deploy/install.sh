#!/usr/bin/env bash
# Install jetstream on Debian/Ubuntu: a venv in /opt/jetstream, the commands in
# /usr/local/bin, the PAM service, /etc/jetstream/server.toml (every setting, commented
# out), the state and trigger directories, and the service:
#  - where systemd runs: the units jetstream-server (enabled and started) and
#    jetstream-relay (enabled and started with --relay);
#  - elsewhere (containers, no systemd as PID 1), with --start: `jetstream start`, a
#    supervisor that restarts the server if it dies (nothing starts it at boot there).
# Run it as root, or as a user who may sudo (it asks sudo itself). Idempotent: run it
# again to upgrade; a running server is restarted on the new version.
#
#   deploy/install.sh [--start] [--relay]
#   deploy/uninstall.sh [--purge]          # to remove it again
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
. "$SRC/deploy/lib/as-root.sh"
as_root "$0" "$@"

PREFIX=${JETSTREAM_PREFIX:-/opt/jetstream}
START=0 RELAY=0
for arg in "$@"; do
    case "$arg" in
        --start) START=1 ;;
        --relay) RELAY=1 ;;
        *) echo "install.sh: error: unknown option $arg (known: --start, --relay)" >&2; exit 2 ;;
    esac
done

need=()
for pkg in python3 python3-venv python3-dev gcc libssl-dev libpam0g iproute2; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
    echo "installing Debian packages: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

PY=${JETSTREAM_PYTHON:-python3}
if [[ ! -x "$PREFIX/bin/python" ]]; then
    "$PY" -m venv "$PREFIX"
fi
echo "installing jetstream into $PREFIX"
"$PREFIX/bin/pip" install -q --upgrade pip >/dev/null
"$PREFIX/bin/pip" install -q "$SRC"
ln -sf "$PREFIX/bin/jetstream" /usr/local/bin/jetstream
ln -sf "$PREFIX/bin/jetstreamctl" /usr/local/bin/jetstreamctl

"$SRC/deploy/install-pam.sh"
install -d -m 0700 /var/lib/jetstream/state
install -d -m 0755 /var/lib/jetstream/triggers /etc/jetstream /var/log/jetstream
if [[ ! -e /etc/jetstream/server.toml ]]; then
    install -m 0644 "$SRC/deploy/server.toml" /etc/jetstream/server.toml
elif ! cmp -s "$SRC/deploy/server.toml" /etc/jetstream/server.toml; then
    install -m 0644 "$SRC/deploy/server.toml" /etc/jetstream/server.toml.sample
fi

if [[ -d /run/systemd/system ]]; then
    install -m 0644 "$SRC"/deploy/systemd/jetstream-{server,relay}.service /etc/systemd/system/
    systemctl daemon-reload
    systemctl enable jetstream-server.service
    systemctl restart jetstream-server.service  # starts it, or moves it to this version
    if ((RELAY)); then
        systemctl enable jetstream-relay.service
        systemctl restart jetstream-relay.service
    fi
    service="systemd unit jetstream-server (enabled at boot)"
    log="journalctl -u jetstream-server"
    stop="systemctl stop jetstream-server (or jetstream stop)"
else
    if jetstream status --quiet 2>/dev/null && [[ -s /run/jetstream/server.pid ]]; then
        jetstream stop  # an upgrade: start it again on the new version
        START=1
    fi
    if ((START)); then
        jetstream start
        ((RELAY)) && jetstream start --name relay relay_server --control-port 8887
    fi
    service="jetstream start (no systemd here: a supervisor restarts the server if it dies; nothing starts it at boot)"
    log="/var/log/jetstream/server.log"
    stop="jetstream stop"
fi

cat <<INFO
jetstream $("$PREFIX/bin/jetstream" --version | awk '{print $NF}') installed in $PREFIX (jetstream, jetstreamctl in /usr/local/bin)
  settings   /etc/jetstream/server.toml (every setting, commented out at its default)
  state      /var/lib/jetstream/state (back it up; see docs/operations.md)
  service    $service
  log        $log
  stop       $stop
  uninstall  $SRC/deploy/uninstall.sh (keeps the state; --purge removes it too)
INFO

if [[ -d /run/systemd/system ]] || ((START)); then
    for _ in $(seq 1 50); do
        jetstream status --quiet 2>/dev/null && break
        sleep 0.2
    done
    jetstream status
else
    echo "start it with: jetstream start"
fi
