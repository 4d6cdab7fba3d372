# Sourced by scripts that must run as root: `. lib/as-root.sh; as_root "$0" "$@"`.
# As root it returns at once (no sudo needed, none need be installed); otherwise it runs the
# script again through sudo, or says how to become root where sudo is missing.
as_root() {
    local script=$1
    shift
    [ "$(id -u)" -eq 0 ] && return 0
    if command -v sudo >/dev/null 2>&1; then
        exec sudo -- "$script" "$@"
    fi
    echo "$(basename "$script"): error: run as root (sudo is not installed: su -c '$script $*')" >&2
    exit 2
}
