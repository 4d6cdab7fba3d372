#!/usr/bin/env bash
# Install jetstream on Debian/Ubuntu as root: a venv in /opt/jetstream, the commands in
# /usr/local/bin, the PAM service, the state and trigger directories, and the systemd unit
# (enabled and started where systemd runs). Idempotent: run it again to upgrade.
#
#   sudo deploy/install.sh            # install (and start the service under systemd)
#   sudo deploy/install.sh --start    # also start a server now without systemd, then check it
set -euo pipefail

PREFIX=${JETSTREAM_PREFIX:-/opt/jetstream}
SRC=$(cd "$(dirname "$0")/.." && pwd)
START=0
[[ "${1:-}" == "--start" ]] && START=1

if [[ $(id -u) -ne 0 ]]; then
    echo "install.sh: error: run as root (jetstream serves every system user through PAM)" >&2
    exit 2
fi

need=()
for pkg in python3 python3-venv python3-dev gcc libssl-dev libpam0g iproute2; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

PY=${JETSTREAM_PYTHON:-python3}
if [[ ! -x "$PREFIX/bin/python" ]]; then
    "$PY" -m venv "$PREFIX"
fi
"$PREFIX/bin/pip" install -q --upgrade pip >/dev/null
"$PREFIX/bin/pip" install -q "$SRC"
ln -sf "$PREFIX/bin/jetstream" /usr/local/bin/jetstream
ln -sf "$PREFIX/bin/jetstreamctl" /usr/local/bin/jetstreamctl

"$SRC/deploy/install-pam.sh"
install -d -m 0700 /var/lib/jetstream/state
install -d -m 0755 /var/lib/jetstream/triggers /etc/jetstream

if [[ -d /run/systemd/system ]]; then
    install -m 0644 "$SRC/deploy/systemd/jetstream-server.service" /etc/systemd/system/
    systemctl daemon-reload
    systemctl enable --now jetstream-server.service
    echo "jetstream-server.service enabled and started"
elif ((START)); then
    if ! jetstream status --quiet 2>/dev/null; then
        nohup jetstream server >>/var/log/jetstream-server.log 2>&1 &
        echo "jetstream server started in the background (pid $!, log /var/log/jetstream-server.log)"
    fi
fi

if [[ -d /run/systemd/system ]] || ((START)); then
    for _ in $(seq 1 50); do
        jetstream status --quiet 2>/dev/null && break
        sleep 0.2
    done
    jetstream status
fi
