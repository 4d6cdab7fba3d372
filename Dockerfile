# jetstream server image. Build: docker build -t jetstream .   (podman build --format docker)
# Run:   docker run --rm -p 8886:8886/tcp -p 8886:8886/udp -v js-state:/var/lib/jetstream/state \
#            jetstream server --api-allow-remote-control
# CI builds and runs it offline with podman: tests/deploy/test_image.py.
FROM python:3.12-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md hatch_build.py ./
COPY proto ./proto
COPY jetstream ./jetstream
RUN pip wheel --no-cache-dir --wheel-dir /wheels . \
    && python -c "import zipfile, glob; w = glob.glob('/wheels/jetstream-*.whl')[0]; \
assert any('datachannel/_fast' in n for n in zipfile.ZipFile(w).namelist()), 'no C data path'"

FROM python:3.12-slim
RUN apt-get update && apt-get install -y --no-install-recommends libpam0g libpam-modules libssl3 tini \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY deploy/pam/jetstream /etc/pam.d/jetstream
# The server runs as root by design: it reads and writes files with each user's own rights.
VOLUME ["/var/lib/jetstream/state"]
EXPOSE 8886/tcp 8886/udp 9886/tcp
# Health over gRPC (grpc.health.v1, the same check Kubernetes probes make natively);
# JETSTREAM_API_PORT moves it along with the server.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s \
    CMD ["jetstream", "status", "--quiet"]
ENTRYPOINT ["tini", "--", "jetstream"]
CMD ["server", "--api-allow-remote-control", "--metrics-host", "0.0.0.0"]
