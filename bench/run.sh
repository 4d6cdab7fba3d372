#!/usr/bin/env bash
# The side-by-side benchmark (issue #7) from one command, on a fresh Debian machine, as root:
#
#   sudo bench/run.sh                       # full run: profiles a-e and loopback, both workloads
#   sudo bench/run.sh --profiles a,b --workloads big --size 256M
#   sudo bench/run.sh --help
#
# Makes the venv and installs jetstream into it if needed; `python -m bench.run` then installs
# the rest (Debian: openssh-server, rsync, iperf3, uftp, gcc...; pip: matplotlib).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
    echo "bench/run.sh: error: run as root (namespaces, TUN devices, a system user)" >&2
    exit 2
fi
need=()
command -v python3 >/dev/null || need+=(python3)
python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
if ((${#need[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [[ ! -x .venv/bin/python ]]; then
    python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import jetstream.v1.transfers_pb2' 2>/dev/null; then
    .venv/bin/pip install -q -e .
fi
exec .venv/bin/python -m bench.run "$@"
