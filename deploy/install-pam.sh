#!/bin/sh
# Install jetstream's PAM service file as /etc/pam.d/jetstream (as root; idempotent).
#
#   deploy/install-pam.sh [--force]
#
# A file that still carries the "jetstream-managed" first line is replaced; one without it was
# edited on purpose and is kept (with a warning) unless --force is given.
# PAM_DIR (default /etc/pam.d) exists for tests.
set -eu

src="$(cd "$(dirname "$0")" && pwd)/pam/jetstream"
dir="${PAM_DIR:-/etc/pam.d}"
dest="$dir/jetstream"
marker="# jetstream-managed:"

if [ -e "$dest" ] && [ "${1:-}" != "--force" ] && ! head -n 1 "$dest" | grep -q "^$marker"; then
    if ! cmp -s "$src" "$dest"; then
        echo "install-pam.sh: kept locally edited $dest (use --force to replace it)" >&2
    fi
    exit 0
fi
mkdir -p "$dir"
tmp="$(mktemp "$dir/.jetstream.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
cat "$src" >"$tmp"
chmod 0644 "$tmp"
chown 0:0 "$tmp" 2>/dev/null || true
mv -f "$tmp" "$dest"
trap - EXIT
