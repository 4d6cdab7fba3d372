"""`jetstream status`: ask a server's health service and identity, as an operator would."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from jetstream.client.channel import Endpoint, open_channel
from jetstream.errors import JetstreamError
from jetstream.v1 import server_pb2, server_pb2_grpc


def probe(host: str, port: int, *, plaintext: bool, timeout: float = 5.0) -> str:
    """A one-paragraph report, or ConnectionError naming what failed."""
    endpoint = Endpoint(host, port)
    address = endpoint.target
    try:
        channel, fingerprint = open_channel(endpoint, plaintext=plaintext)
    except JetstreamError as exc:
        raise ConnectionError(f"no jetstream server answers at {address}: {exc}") from None
    with channel:
        try:
            status = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            ).status
            info = server_pb2_grpc.ServerServiceStub(channel).GetServerInfo(
                server_pb2.GetServerInfoRequest(), timeout=timeout
            ).server_info
        except grpc.RpcError as exc:
            raise ConnectionError(
                f"no jetstream server answers at {address}: {exc.details()}"  # type: ignore[attr-defined]
            ) from None
    state = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
    if status != health_pb2.HealthCheckResponse.SERVING:
        raise ConnectionError(f"jetstream server at {address} is {state}")
    ports = ",".join(str(p) for p in info.receive_ports)
    return (
        f"jetstream {info.version} at {address}: {state}\n"
        f"  name {info.display_name}, server uid {info.server_uid}\n"
        f"  data channel udp {ports}, telemetry {'on' if info.telemetry_enabled else 'off'}\n"
        f"  API {'TLS certificate SHA256:' + fingerprint.hex() if fingerprint else 'plaintext'}"
    )
