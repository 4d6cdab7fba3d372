#!/bin/sh
# Create the system accounts the root tests log in as (see tests/system/users.py), in the
# states the tests expect, and install jetstream's PAM service. Root only; idempotent:
# every run resets passwords, locks and expiry dates.
set -eu
cd "$(dirname "$0")/../.."

if [ "$(id -u)" -ne 0 ]; then
    echo "create_test_users.sh: error: run as root" >&2
    exit 2
fi

getent group sudo >/dev/null || groupadd --system sudo

for name in jsalice jsbob jsnopass jslocked jsexpired jspwexpired jsadmin; do
    if ! getent passwd "$name" >/dev/null; then
        useradd --no-create-home --shell /usr/sbin/nologin --comment "jetstream test $name" "$name"
    fi
    usermod --unlock "$name" 2>/dev/null || true
    chage --expiredate -1 --lastday "$(( $(date +%s) / 86400 ))" "$name"
done

python3 tests/system/users.py | chpasswd
passwd --quiet --delete jsnopass
usermod --lock jslocked
chage --expiredate 0 jsexpired
chage --lastday 0 jspwexpired
usermod --append --groups sudo jsadmin

deploy/install-pam.sh
