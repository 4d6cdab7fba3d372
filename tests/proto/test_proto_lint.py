"""The gRPC contract in proto/: buf lint, generated stubs up to date, services as expected.

buf comes from npm (`npm install --prefix .tools/buf @bufbuild/buf`). It is looked up in
$JETSTREAM_BUF, then on PATH, then in .tools/buf/node_modules/.bin/. Without it the buf tests
are skipped, except under CI (env CI set), where a missing buf is a failure.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import grpc
import grpc.aio
import pytest
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "proto"
GENERATED = ROOT / "jetstream" / "v1"

# service -> {method: (client_streaming, server_streaming)}
UNARY = (False, False)
SERVER_STREAM = (False, True)
BIDI = (True, True)
EXPECTED_SERVICES: dict[str, dict[str, dict[str, tuple[bool, bool]]]] = {
    "auth": {
        "AuthService": {
            "Login": UNARY,
            "Logout": UNARY,
            "WhoAmI": UNARY,
            "CreateApiToken": UNARY,
            "GetApiToken": UNARY,
            "ListApiTokens": UNARY,
            "RevokeApiToken": UNARY,
        }
    },
    "server": {
        "ServerService": {
            "GetServerInfo": UNARY,
            "ListEvents": UNARY,
            "GetBandwidthLimits": UNARY,
            "UpdateBandwidthLimits": UNARY,
            "ListSandboxMappings": UNARY,
            "SetSandboxMapping": UNARY,
            "DeleteSandboxMapping": UNARY,
        }
    },
    "destinations": {
        "DestinationService": {
            "CreateDestination": UNARY,
            "GetDestination": UNARY,
            "ListDestinations": UNARY,
            "UpdateDestination": UNARY,
            "DeleteDestination": UNARY,
            "TestDestination": UNARY,
        }
    },
    "manifests": {
        "ManifestService": {
            "CreateManifest": UNARY,
            "GetManifest": UNARY,
            "WaitManifest": UNARY,
            "ListManifests": UNARY,
            "ListManifestFiles": UNARY,
            "DeleteManifest": UNARY,
        }
    },
    "transfers": {
        "TransferService": {
            "CreateTransfer": UNARY,
            "GetTransfer": UNARY,
            "ListTransfers": UNARY,
            "WatchTransfer": SERVER_STREAM,
            "UpdateTransfer": UNARY,
            "PauseTransfer": UNARY,
            "ResumeTransfer": UNARY,
            "CancelTransfer": UNARY,
            "DeleteTransfer": UNARY,
            "ListTransferFiles": UNARY,
            "GetIncomingTransfer": UNARY,
            "ListIncomingTransfers": UNARY,
            "ListSources": UNARY,
        }
    },
    "files": {
        "FileService": {
            "ListDirectory": UNARY,
            "Stat": UNARY,
            "MakeDirectory": UNARY,
            "Remove": UNARY,
            "Rename": UNARY,
        }
    },
    "peer": {
        "PeerService": {
            "OpenReceiveSession": UNARY,
            "QueryReceivedState": SERVER_STREAM,
            "CompleteReceiveSession": UNARY,
            "OpenSendSession": UNARY,
            "CompleteSendSession": UNARY,
        }
    },
    "relay": {
        "RelayService": {
            "Control": BIDI,
            "Tunnel": BIDI,
        }
    },
    "triggers": {
        "TriggerService": {
            "ListTriggers": UNARY,
        }
    },
    "watches": {
        "WatchService": {
            "CreateWatch": UNARY,
            "GetWatch": UNARY,
            "ListWatches": UNARY,
            "DeleteWatch": UNARY,
        }
    },
    "common": {},
    "stream_records": {},
}


# --- helpers -------------------------------------------------------------------------------


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _find_buf() -> str | None:
    explicit = os.environ.get("JETSTREAM_BUF")
    if explicit:
        return explicit
    on_path = shutil.which("buf")
    if on_path:
        return on_path
    local = ROOT / ".tools" / "buf" / "node_modules" / ".bin" / "buf"
    return str(local) if local.is_file() and os.access(local, os.X_OK) else None


@pytest.fixture(scope="module")
def buf() -> str:
    path = _find_buf()
    if path is None:
        message = (
            "buf not found (JETSTREAM_BUF, PATH, .tools/buf/node_modules/.bin/buf); "
            "install it with `npm install --prefix .tools/buf @bufbuild/buf`"
        )
        if _in_ci():
            pytest.fail(message + " (CI is set, so this is an error)")
        pytest.skip(message)
    return path


def _run_buf(buf: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([buf, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def _load_generator() -> ModuleType:
    """proto/generate.py, loaded the same way hatch_build.py loads it."""
    spec = importlib.util.spec_from_file_location("jetstream_proto_generate", PROTO / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Lines that only record the generator's version; a newer grpcio-tools in the build
# environment than in the test venv must not make the stubs look stale.
_VERSION_STAMPS = [
    re.compile(r"^# Protobuf Python Version: .*$", re.M),
    re.compile(
        r"_runtime_version\.ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,"
        r"\s*\d+,\s*\d+,\s*\d+,\s*'[^']*',"
    ),
    re.compile(r"^GRPC_GENERATED_VERSION = '[^']*'$", re.M),
]


def _normalized(text: str) -> str:
    for pattern in _VERSION_STAMPS:
        text = pattern.sub("<version>", text)
    return text


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"jetstream.v1.{name}")


# --- buf -----------------------------------------------------------------------------------


def test_buf_lint_is_clean(buf: str) -> None:
    result = _run_buf(buf, "lint", "proto")
    assert result.returncode == 0 and not result.stdout.strip(), (
        f"buf lint proto failed:\n{result.stdout}{result.stderr}"
    )


def test_buf_format_is_clean(buf: str) -> None:
    result = _run_buf(buf, "format", "--diff", "--exit-code", "proto")
    assert result.returncode == 0, (
        f"proto files are not buf-formatted (fix: buf format -w proto):\n{result.stdout}"
        f"{result.stderr}"
    )


def test_buf_lint_rejects_violations(buf: str, tmp_path: Path) -> None:
    """The lint configuration is live: a file breaking the rules fails it."""
    shutil.copy(PROTO / "buf.yaml", tmp_path / "buf.yaml")
    bad = tmp_path / "jetstream" / "v1" / "bad.proto"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        'syntax = "proto3";\n'
        "package jetstream.v1;\n"
        "enum Color { RED = 0; }\n"
        "message Thing { string Name = 1; }\n"
        "service Things { rpc Get(Thing) returns (Thing); }\n"
    )
    result = _run_buf(buf, "lint", "--error-format=json", ".", cwd=tmp_path)
    assert result.returncode != 0
    reported = {json.loads(line)["type"] for line in result.stdout.splitlines() if line.strip()}
    for rule in (
        "ENUM_ZERO_VALUE_SUFFIX",
        "ENUM_VALUE_PREFIX",
        "FIELD_LOWER_SNAKE_CASE",
        "SERVICE_SUFFIX",
        "RPC_REQUEST_STANDARD_NAME",
        "COMMENT_MESSAGE",
    ):
        assert rule in reported, f"{rule} not reported:\n{result.stdout}"


# --- generated stubs ------------------------------------------------------------------------


def test_generated_stubs_are_not_stale(tmp_path: Path) -> None:
    fresh_dir = tmp_path / "jetstream" / "v1"
    _load_generator().generate(tmp_path)
    fix = "regenerate with `.venv/bin/pip install -e .` or `.venv/bin/python proto/generate.py`"
    assert GENERATED.is_dir(), f"{GENERATED} is missing; {fix}"

    def listing(directory: Path) -> set[str]:
        return {p.name for p in directory.iterdir() if p.suffix in (".py", ".pyi")}

    assert listing(GENERATED) == listing(fresh_dir), f"generated file set differs; {fix}"
    stale = [
        name
        for name in sorted(listing(fresh_dir))
        if _normalized((GENERATED / name).read_text())
        != _normalized((fresh_dir / name).read_text())
    ]
    assert not stale, f"stale generated modules {stale}; {fix}"


def test_every_proto_file_has_modules() -> None:
    protos = sorted(p.stem for p in (PROTO / "jetstream" / "v1").glob("*.proto"))
    assert protos == sorted(EXPECTED_SERVICES), "update EXPECTED_SERVICES for new .proto files"
    for stem in protos:
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi"):
            assert (GENERATED / f"{stem}{suffix}").is_file(), f"{stem}{suffix} not generated"


@pytest.mark.parametrize("stem", sorted(EXPECTED_SERVICES))
def test_services_and_methods(stem: str) -> None:
    pb2 = _module(f"{stem}_pb2")
    pb2_grpc = _module(f"{stem}_pb2_grpc")
    descriptor = pb2.DESCRIPTOR
    assert descriptor.package == "jetstream.v1"
    assert descriptor.name == f"jetstream/v1/{stem}.proto"

    expected = EXPECTED_SERVICES[stem]
    assert set(descriptor.services_by_name) == set(expected)
    for service_name, methods in expected.items():
        service = descriptor.services_by_name[service_name]
        assert service.full_name == f"jetstream.v1.{service_name}"
        actual = {m.name: (m.client_streaming, m.server_streaming) for m in service.methods}
        assert actual == methods, f"{service_name} methods differ"
        for method in service.methods:
            # buf STANDARD: one request and one response message per RPC, named after it.
            assert method.input_type.name == f"{method.name}Request"
            assert method.output_type.name == f"{method.name}Response"
            assert method.input_type.file is descriptor
        for attr in (f"{service_name}Stub", f"{service_name}Servicer"):
            assert hasattr(pb2_grpc, attr), f"{stem}_pb2_grpc lacks {attr}"
        assert callable(getattr(pb2_grpc, f"add_{service_name}Servicer_to_server"))
        servicer = getattr(pb2_grpc, f"{service_name}Servicer")
        for name in methods:
            assert callable(getattr(servicer, name))


def _all_methods() -> list[MethodDescriptor]:
    out: list[MethodDescriptor] = []
    for stem in EXPECTED_SERVICES:
        for service in _module(f"{stem}_pb2").DESCRIPTOR.services_by_name.values():
            out.extend(service.methods)
    return out


def test_list_methods_paginate() -> None:
    """AIP-158: every List RPC takes page_size/page_token and returns next_page_token."""
    lists = [m for m in _all_methods() if m.name.startswith("List")]
    assert len(lists) >= 10
    for method in lists:
        request, response = method.input_type, method.output_type
        page_size = request.fields_by_name["page_size"]
        assert page_size.type == FieldDescriptor.TYPE_INT32, method.name
        assert request.fields_by_name["page_token"].type == FieldDescriptor.TYPE_STRING
        assert response.fields_by_name["next_page_token"].type == FieldDescriptor.TYPE_STRING


def test_update_methods_take_field_masks() -> None:
    """AIP-134: every Update RPC takes a google.protobuf.FieldMask update_mask."""
    updates = [m for m in _all_methods() if m.name.startswith("Update")]
    assert {m.name for m in updates} == {
        "UpdateBandwidthLimits",
        "UpdateDestination",
        "UpdateTransfer",
    }
    for method in updates:
        mask_type = method.input_type.fields_by_name["update_mask"].message_type
        assert mask_type is not None and mask_type.full_name == "google.protobuf.FieldMask"


def test_api_reference_lists_every_rpc() -> None:
    text = (ROOT / "docs" / "api-reference.md").read_text()
    missing = [
        f"{service}.{method}"
        for services in EXPECTED_SERVICES.values()
        for service, methods in services.items()
        for method in methods
        if not re.search(rf"\b{method}\b", text) or service not in text
    ]
    assert not missing, f"docs/api-reference.md does not mention {missing}"


def test_enums_have_unspecified_zero_values() -> None:
    for stem in EXPECTED_SERVICES:
        for enum in _module(f"{stem}_pb2").DESCRIPTOR.enum_types_by_name.values():
            assert enum.values_by_number[0].name.endswith("_UNSPECIFIED"), enum.name


# --- the stubs work over a real channel ------------------------------------------------------


def test_stubs_round_trip_over_grpc_aio() -> None:
    from jetstream.v1 import server_pb2, server_pb2_grpc, transfers_pb2, transfers_pb2_grpc

    class Server(server_pb2_grpc.ServerServiceServicer):
        async def GetServerInfo(
            self,
            request: server_pb2.GetServerInfoRequest,
            context: grpc.aio.ServicerContext[
                server_pb2.GetServerInfoRequest, server_pb2.GetServerInfoResponse
            ],
        ) -> server_pb2.GetServerInfoResponse:
            info = server_pb2.ServerInfo(version="0.0-test", api_version=1, receive_ports=[8886])
            return server_pb2.GetServerInfoResponse(server_info=info)

    class Transfers(transfers_pb2_grpc.TransferServiceServicer):
        async def WatchTransfer(
            self,
            request: transfers_pb2.WatchTransferRequest,
            context: grpc.aio.ServicerContext[
                transfers_pb2.WatchTransferRequest, transfers_pb2.WatchTransferResponse
            ],
        ) -> AsyncIterator[transfers_pb2.WatchTransferResponse]:
            for kind in (
                transfers_pb2.TRANSFER_UPDATE_KIND_SNAPSHOT,
                transfers_pb2.TRANSFER_UPDATE_KIND_STATE_CHANGED,
            ):
                yield transfers_pb2.WatchTransferResponse(
                    kind=kind, transfer=transfers_pb2.Transfer(name=request.name)
                )

    async def scenario() -> None:
        server = grpc.aio.server()
        server_pb2_grpc.add_ServerServiceServicer_to_server(Server(), server)
        transfers_pb2_grpc.add_TransferServiceServicer_to_server(Transfers(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = server_pb2_grpc.ServerServiceStub(channel)
                reply = await stub.GetServerInfo(server_pb2.GetServerInfoRequest(), timeout=10)
                assert reply.server_info.version == "0.0-test"
                assert list(reply.server_info.receive_ports) == [8886]

                # Methods a servicer does not implement answer UNIMPLEMENTED.
                with pytest.raises(grpc.aio.AioRpcError) as excinfo:
                    await stub.ListEvents(server_pb2.ListEventsRequest(), timeout=10)
                assert excinfo.value.code() == grpc.StatusCode.UNIMPLEMENTED

                watch = transfers_pb2_grpc.TransferServiceStub(channel).WatchTransfer(
                    transfers_pb2.WatchTransferRequest(name="transfers/t1"), timeout=10
                )
                kinds = [update.kind async for update in watch]
                assert kinds == [
                    transfers_pb2.TRANSFER_UPDATE_KIND_SNAPSHOT,
                    transfers_pb2.TRANSFER_UPDATE_KIND_STATE_CHANGED,
                ]
        finally:
            await server.stop(grace=None)

    asyncio.run(scenario())
