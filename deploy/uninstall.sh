#!/usr/bin/env bash
# Remove what deploy/install.sh installed: the service (stopped first), the commands, the
# venv and the PAM service. The state (/var/lib/jetstream: database, keys, server identity)
# and /etc/jetstream are kept, so a reinstall is the same server; --purge removes them too.
#
#   deploy/uninstall.sh [--purge]
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
. "$SRC/deploy/lib/as-root.sh"
as_root "$0" "$@"

PREFIX=${JETSTREAM_PREFIX:-/opt/jetstream}
PURGE=0
for arg in "$@"; do
    case "$arg" in
        --purge) PURGE=1 ;;
        *) echo "uninstall.sh: error: unknown option $arg (known: --purge)" >&2; exit 2 ;;
    esac
done

for unit in jetstream-server jetstream-relay; do
    if [[ -e /etc/systemd/system/$unit.service ]]; then
        if [[ -d /run/systemd/system ]]; then
            systemctl disable --now "$unit.service" || true
        fi
        rm -f "/etc/systemd/system/$unit.service"
    fi
done
[[ -d /run/systemd/system ]] && systemctl daemon-reload
if [[ -x "$PREFIX/bin/jetstream" ]]; then
    "$PREFIX/bin/jetstream" stop --name relay >/dev/null
    "$PREFIX/bin/jetstream" stop
fi

for cmd in jetstream jetstreamctl; do
    [[ "$(readlink "/usr/local/bin/$cmd" || true)" == "$PREFIX/bin/$cmd" ]] && rm -f "/usr/local/bin/$cmd"
done
rm -rf "$PREFIX"
if head -n 1 /etc/pam.d/jetstream 2>/dev/null | grep -q "^# jetstream-managed:"; then
    rm -f /etc/pam.d/jetstream
fi

if ((PURGE)); then
    rm -rf /var/lib/jetstream /etc/jetstream /var/log/jetstream /run/jetstream
    echo "jetstream removed, with its state, settings and logs"
else
    echo "jetstream removed; kept its state in /var/lib/jetstream and settings in /etc/jetstream" \
         "(deploy/uninstall.sh --purge removes them)"
fi
