#!/usr/bin/env bash
# Rootful podman for the container tests, offline: the recipe of
# shared/design/research/containers.md. Usage (as root):
#
#   tests/deploy/podman.sh env     # print the environment that points podman at our store
#   tests/deploy/podman.sh base    # tools, configuration, the local base images
#   tests/deploy/podman.sh build   # base, then the project's Dockerfile as localhost/jetstream:ci
#   tests/deploy/podman.sh clean   # remove the store and caches
#
# Base images cannot be pulled here: a Debian rootfs made with debootstrap is imported as
# localhost/debian:bookworm-slim, and a stand-in for python:3.12-slim (Debian's python3,
# with the host's CA bundle, because outgoing TLS is intercepted by a CA only the host
# trusts) is tagged with the official name in this private store, so the Dockerfile stays
# what users build with Docker. Everything lives under $JETSTREAM_PODMAN_DIR (default
# /var/tmp/jetstream-podman) and is reused by the next run on the same machine: cold about
# 1-2 minutes, warm seconds.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
W=${JETSTREAM_PODMAN_DIR:-/var/tmp/jetstream-podman}
export CONTAINERS_CONF="$W/containers.conf" CONTAINERS_STORAGE_CONF="$W/storage.conf"

configure() {
    mkdir -p "$W"
    if ! command -v podman >/dev/null || ! command -v runc >/dev/null \
        || ! command -v debootstrap >/dev/null || ! dpkg -s catatonit >/dev/null 2>&1; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            podman runc catatonit debootstrap uidmap containernetworking-plugins iptables \
            >/dev/null
    fi
    # runc: crun rejects this machine's hybrid cgroup layout; ulimits below the host's hard
    # limits (no CAP_SYS_RESOURCE here); storage and run state under $W.
    cat >"$W/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
    cat >"$W/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$W/storage"
runroot = "$W/run"
CONF
}

base() {
    configure
    if ! podman image exists localhost/debian:bookworm-slim; then
        if [[ ! -s "$W/rootfs.tar" ]]; then
            rm -rf "$W/rootfs"
            debootstrap --variant=minbase bookworm "$W/rootfs" >"$W/debootstrap.log"
            rm -rf "$W"/rootfs/var/lib/apt/lists/* "$W"/rootfs/var/cache/apt/*.bin \
                "$W"/rootfs/var/cache/apt/archives/*.deb
            tar --numeric-owner -C "$W/rootfs" -cf "$W/rootfs.tar.tmp" .
            mv "$W/rootfs.tar.tmp" "$W/rootfs.tar"
            rm -rf "$W/rootfs"
        fi
        podman import -q --change 'CMD ["bash"]' "$W/rootfs.tar" \
            localhost/debian:bookworm-slim >/dev/null
    fi
    if ! podman image exists docker.io/library/python:3.12-slim; then
        local b="$W/base"
        mkdir -p "$b"
        cp "${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}" "$b/ci-ca.crt"
        cat >"$b/Containerfile" <<'CF'
FROM localhost/debian:bookworm-slim
COPY ci-ca.crt /etc/ssl/certs/ci-ca.crt
ENV LANG=C.UTF-8 PIP_CERT=/etc/ssl/certs/ci-ca.crt SSL_CERT_FILE=/etc/ssl/certs/ci-ca.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ci-ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip \
        python3-venv ca-certificates \
 && rm -f /usr/lib/python3*/EXTERNALLY-MANAGED \
 && ln -sf /usr/bin/python3 /usr/local/bin/python && ln -sf /usr/bin/pip3 /usr/local/bin/pip \
 && rm -rf /var/lib/apt/lists/*
CMD ["python3"]
CF
        podman build -q --pull=never --network=host -t docker.io/library/python:3.12-slim \
            "$b" >/dev/null
    fi
}

case "${1:-}" in
    env) echo "CONTAINERS_CONF=$CONTAINERS_CONF"; echo "CONTAINERS_STORAGE_CONF=$CONTAINERS_STORAGE_CONF" ;;
    base) base ;;
    build)
        base
        # --format docker keeps the Dockerfile's HEALTHCHECK (OCI images have none).
        podman build -q --format docker --pull=never --network=host \
            -t localhost/jetstream:ci -f "$REPO/Dockerfile" "$REPO" >/dev/null
        # Layers of older builds go after three days; recent ones are the next run's cache.
        podman image prune -f --filter until=72h >/dev/null
        ;;
    clean)
        [[ -e "$W/storage.conf" ]] && podman system reset -f >/dev/null 2>&1 || true
        rm -rf "$W"
        ;;
    *) echo "usage: $0 env|base|build|clean" >&2; exit 2 ;;
esac
