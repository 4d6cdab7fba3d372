"""Drive one jetstream push through the public gRPC API; runs inside namespace A.

    ip netns exec jsbench-a .venv/bin/python -m bench.jsclient \
        --api 127.0.0.1:8886 --dest-host 10.77.0.2 --dest-api-port 8886 \
        --source /dev/shm/.../src/big-1x1073741824/file.bin \
        --dest-path /dev/shm/.../dst/jetstream --timeout 300 --out result.json
    # the password comes in $BENCH_JS_PASSWORD

The flow is the contract in proto/jetstream/v1: Login, CreateDestination, CreateManifest +
WaitManifest, CreateTransfer, WatchTransfer until a terminal state. Every failure is caught
and written to the JSON (stage, gRPC code, message) so the runner can report
"jetstream: not available (...)" instead of crashing. The wall time the runner reports is
CreateManifest to the terminal state, measured here with a monotonic clock.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration

CALL_TIMEOUT = 30.0
TERMINAL = {"TRANSFER_STATE_COMPLETED", "TRANSFER_STATE_FAILED", "TRANSFER_STATE_CANCELLED"}


class Stage(Exception):
    def __init__(self, stage: str, error: str) -> None:
        super().__init__(f"{stage}: {error}")
        self.stage = stage
        self.error = error


def _rpc_error(exc: grpc.RpcError) -> str:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return f"{code.name if code else 'ERROR'}: {details}"


def _rtt_ms(p: Any) -> float | None:
    """The smoothed RTT in ms; None while unset (or zero: not measured yet)."""
    if not p.HasField("rtt"):
        return None
    ms: float = p.rtt.ToNanoseconds() / 1e6
    return round(ms, 3) if ms > 0 else None


def _progress(p: Any) -> dict[str, Any]:
    return {
        "bytes_total": p.bytes_total,
        "bytes_done": p.bytes_done,
        "files_total": p.files_total,
        "files_done": p.files_done,
        "files_failed": p.files_failed,
        "rate_bps": p.rate_bps,
        "average_rate_bps": p.average_rate_bps,
        "rtt_ms": _rtt_ms(p),
        "loss_ratio": p.loss_ratio,
        "bytes_retransmitted": p.bytes_retransmitted,
        "bytes_sent_on_wire": p.bytes_sent_on_wire,
    }


def push(args: argparse.Namespace, password: str, out: dict[str, Any]) -> None:
    from jetstream.client.channel import Endpoint, open_channel
    from jetstream.v1 import (
        auth_pb2,
        auth_pb2_grpc,
        common_pb2,
        destinations_pb2,
        destinations_pb2_grpc,
        manifests_pb2,
        manifests_pb2_grpc,
        transfers_pb2,
        transfers_pb2_grpc,
    )

    host, _, port = args.api.rpartition(":")
    stage = "connect"
    try:
        channel, _fp = open_channel(Endpoint(host, int(port)))
    except Exception as exc:
        raise Stage(stage, str(exc)) from None
    deadline = time.monotonic() + args.timeout
    try:
        stage = "Login"
        auth = auth_pb2_grpc.AuthServiceStub(channel)
        login = auth.Login(
            auth_pb2.LoginRequest(username=args.user, password=password), timeout=CALL_TIMEOUT
        )
        md = (("authorization", f"Bearer {login.session_token}"),)

        stage = "CreateDestination"
        dests = destinations_pb2_grpc.DestinationServiceStub(channel)
        dest = dests.CreateDestination(
            destinations_pb2.CreateDestinationRequest(
                destination=destinations_pb2.Destination(
                    display_name="bench receiver",
                    host=args.dest_host,
                    api_port=args.dest_api_port,
                    password=destinations_pb2.PasswordCredentials(
                        username=args.user, password=password
                    ),
                )
            ),
            metadata=md,
            timeout=CALL_TIMEOUT,
        ).destination

        stage = "CreateManifest"
        t0 = time.monotonic()
        manifests = manifests_pb2_grpc.ManifestServiceStub(channel)
        spec = manifests_pb2.ManifestSpec(
            mappings=[
                manifests_pb2.FileMapping(
                    source_path=args.source, destination_path=Path(args.source).name
                )
            ]
        )
        manifest = manifests.CreateManifest(
            manifests_pb2.CreateManifestRequest(manifest=manifests_pb2.Manifest(spec=spec)),
            metadata=md,
            timeout=CALL_TIMEOUT,
        ).manifest
        stage = "WaitManifest"
        manifest = manifests.WaitManifest(
            manifests_pb2.WaitManifestRequest(name=manifest.name),
            metadata=md,
            timeout=max(1.0, deadline - time.monotonic()),
        ).manifest
        state = manifests_pb2.ManifestState.Name(manifest.state)
        out["manifest"] = {
            "state": state,
            "files": manifest.file_count,
            "bytes": manifest.total_bytes,
            "seconds": time.monotonic() - t0,
        }
        if state != "MANIFEST_STATE_COMPLETE":
            raise Stage(stage, f"manifest {state}: {manifest.error.message}")

        stage = "CreateTransfer"
        transfers = transfers_pb2_grpc.TransferServiceStub(channel)
        t1 = time.monotonic()
        transfer = transfers.CreateTransfer(
            transfers_pb2.CreateTransferRequest(
                transfer=transfers_pb2.Transfer(
                    destination=dest.name,
                    manifest=manifest.name,
                    destination_path=args.dest_path,
                    rate_limit=common_pb2.RateLimit(
                        target_bps=args.fixed_bps, policy=common_pb2.RATE_POLICY_FIXED
                    ) if args.fixed_bps else None,
                    flows=args.flows,
                )
            ),
            metadata=md,
            timeout=CALL_TIMEOUT,
        ).transfer
        out["transfer"] = transfer.name

        stage = "WatchTransfer"
        points: list[list[Any]] = out["points"]
        final = transfer
        stream = transfers.WatchTransfer(
            transfers_pb2.WatchTransferRequest(
                name=transfer.name, progress_interval=Duration(nanos=250_000_000)
            ),
            metadata=md,
            timeout=max(1.0, deadline - time.monotonic()),
        )
        try:
            for update in stream:
                final = update.transfer
                p = final.progress
                points.append(
                    [
                        round(time.monotonic() - t1, 3),
                        p.bytes_done,
                        p.rate_bps,
                        _rtt_ms(p),
                        p.loss_ratio,
                        p.bytes_sent_on_wire,
                        p.bytes_retransmitted,
                    ]
                )
                if len(points) > 100_000:  # bounded: about 7 h at 4 updates/s
                    del points[::2]
                if common_pb2.TransferState.Name(final.state) in TERMINAL:
                    break
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
            out["timed_out"] = True
        t2 = time.monotonic()
        state = common_pb2.TransferState.Name(final.state)
        out.update(
            state=state,
            wall_s=t2 - t0,
            transfer_s=t2 - t1,
            progress=_progress(final.progress),
            attempts=final.attempt_count,
        )
        if state != "TRANSFER_STATE_COMPLETED":
            if out.get("timed_out"):
                stage = "CancelTransfer"
                transfers.CancelTransfer(
                    transfers_pb2.CancelTransferRequest(name=transfer.name),
                    metadata=md,
                    timeout=CALL_TIMEOUT,
                )
                raise Stage("WatchTransfer", f"not finished after {args.timeout:g} s")
            err = final.error
            raise Stage("transfer", f"{state}: {err.reason} {err.message}".strip())
        out["ok"] = True
    except grpc.RpcError as exc:
        raise Stage(stage, _rpc_error(exc)) from None
    finally:
        channel.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--api", required=True, help="host:port of the sending server's API")
    ap.add_argument("--user", default="jsbench")
    ap.add_argument("--dest-host", required=True)
    ap.add_argument("--dest-api-port", type=int, default=8886)
    ap.add_argument("--source", required=True, help="absolute path of the file or directory")
    ap.add_argument("--dest-path", required=True, help="absolute directory on the receiver")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--flows", type=int, default=0,
                    help="flows of the push (0: the sending server chooses)")
    ap.add_argument("--fixed-bps", type=int, default=0,
                    help="send at this fixed rate (RATE_POLICY_FIXED) instead of FAIR")
    args = ap.parse_args(argv)
    password = os.environ.get("BENCH_JS_PASSWORD", "")
    out: dict[str, Any] = {"ok": False, "stage": None, "error": None, "points": []}
    try:
        push(args, password, out)
    except Stage as exc:
        out.update(stage=exc.stage, error=exc.error)
    except Exception as exc:
        out.update(stage=out.get("stage") or "client", error=f"{type(exc).__name__}: {exc}")
    tmp = Path(args.out + ".tmp")
    tmp.write_text(json.dumps(out))
    os.replace(tmp, args.out)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
