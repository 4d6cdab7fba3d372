"""The access table (jetstream/api/access.py) covers every RPC, is what docs/security.md shows,
and is what a real server enforces: every RPC called with no credentials, a plain token, a
read-only token and a superuser token (root, real PAM logins)."""

from __future__ import annotations

import asyncio
import importlib
import shutil
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.duration_pb2 import Duration
from grpc import aio

from jetstream.api import access
from jetstream.api.access import RULES, Who
from jetstream.client.channel import Endpoint, open_aio_channel
from jetstream.errors import PermissionDenied
from jetstream.v1 import auth_pb2, auth_pb2_grpc
from tests.support.servers import serve
from tests.system.users import ADMIN, ALICE, PASSWORDS, require_root

REPO = Path(__file__).resolve().parents[2]
NEEDS_CREDENTIALS = "this call needs credentials"
DENIALS = (NEEDS_CREDENTIALS, "only a superuser may call", "read-only credentials may not call",
           "has no access rule")


def every_method() -> dict[str, MethodDescriptor]:
    found = {}
    for proto in sorted((REPO / "proto/jetstream/v1").glob("*.proto")):
        module = importlib.import_module(f"jetstream.v1.{proto.stem}_pb2")
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                found[f"/{service.full_name}/{method.name}"] = method
    return found


def test_every_rpc_in_the_protos_has_exactly_one_rule():
    assert sorted(every_method()) == sorted(RULES)


def test_the_security_doc_shows_the_table():
    doc = (REPO / "docs/security.md").read_text()
    assert access.markdown_table() in doc, (
        "docs/security.md is stale: paste the output of "
        "`python -m jetstream.api.access` into its authorisation section")


def test_every_named_proof_exists():
    for rule in RULES.values():
        for proof in (access.MATRIX, *rule.proofs):
            path, _, function = proof.partition("::")
            source = REPO / path
            assert source.is_file() and f"def {function}(" in source.read_text(), proof


def test_a_method_without_a_rule_is_refused():
    from jetstream.auth.principal import Principal
    from jetstream.auth.sessions import TokenKind, TokenRecord
    from jetstream.services.auth import Caller

    record = TokenRecord("", "root", TokenKind.SESSION, "", (), False, 0.0, 1e12)
    root = Caller(record, "test", Principal("root", 0, 0, (0,), "/root", "root",
                                            is_superuser=True))
    with pytest.raises(PermissionDenied, match="no access rule"):
        access.authorize("/jetstream.v1.NewService/Anything", root)
    access.authorize("/jetstream.v1.ServerService/SetSandboxMapping", root)


async def call(channel: aio.Channel, name: str, method: MethodDescriptor,
               auth: tuple[tuple[str, str], ...]) -> tuple[grpc.StatusCode, str]:
    request = message_factory.GetMessageClass(method.input_type)()
    response = message_factory.GetMessageClass(method.output_type)
    kwargs = {"request_serializer": type(request).SerializeToString,
              "response_deserializer": response.FromString}
    try:
        if method.client_streaming:
            stub = (channel.stream_stream if method.server_streaming
                    else channel.stream_unary)(name, **kwargs)
            reply = stub(iter([request]), metadata=auth, timeout=5)
            if method.server_streaming:
                async for _ in reply:
                    break
            else:
                await reply
        elif method.server_streaming:
            async for _ in channel.unary_stream(name, **kwargs)(request, metadata=auth,
                                                                timeout=5):
                break
        else:
            await channel.unary_unary(name, **kwargs)(request, metadata=auth, timeout=5)
    except aio.AioRpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


def expected_denial(rule: access.Rule, who: str) -> str | None:
    """The interceptor's refusal `who` must get, or None if it must be let through."""
    if who == "nobody":
        return None if rule.who is Who.ANYONE else NEEDS_CREDENTIALS
    if rule.who is Who.SUPERUSER and who != "admin":
        return "only a superuser may call"
    if rule.writes and who == "alice read-only":
        return "read-only credentials may not call"
    return None


def test_every_rpc_follows_its_rule(tmp_path):
    require_root(users=True)
    jail = Path(tempfile.mkdtemp(prefix="js-access-", dir="/tmp"))
    jail.chmod(0o755)

    async def main() -> list[str]:
        async with AsyncExitStack() as stack:
            server = await serve(stack, tmp_path / "state", sandbox_dir=[str(jail)])
            channel, _ = await open_aio_channel(Endpoint("127.0.0.1", server.api_port))
            stack.push_async_callback(channel.close)
            auth = auth_pb2_grpc.AuthServiceStub(channel)

            async def token(user: str, **fields: object) -> tuple[tuple[str, str], ...]:
                session = await auth.Login(auth_pb2.LoginRequest(
                    username=user, password=PASSWORDS[user]))
                made = await auth.CreateApiToken(auth_pb2.CreateApiTokenRequest(
                    api_token=auth_pb2.ApiToken(ttl=Duration(seconds=600), **fields)),
                    metadata=(("authorization", f"Bearer {session.session_token}"),))
                return (("authorization", f"Bearer {made.secret}"),)

            credentials = {"nobody": (), "alice": await token(ALICE),
                           "alice read-only": await token(ALICE, read_only=True),
                           "admin": await token(ADMIN, superuser=True)}
            wrong = []
            for name, method in every_method().items():
                rule = RULES[name]
                for who, metadata in credentials.items():
                    code, details = await call(channel, name, method, metadata)
                    if rule.who is Who.RELAY_PEER:
                        ok = code is grpc.StatusCode.UNIMPLEMENTED  # the relay serves it
                    else:
                        denial = expected_denial(rule, who)
                        if denial is None:
                            ok = not any(d in details for d in DENIALS)
                        else:
                            ok = code is (grpc.StatusCode.UNAUTHENTICATED
                                          if denial == NEEDS_CREDENTIALS
                                          else grpc.StatusCode.PERMISSION_DENIED)
                            ok = ok and denial in details
                    if not ok:
                        wrong.append(f"{name} as {who}: {code.name} {details!r}")
            return wrong

    try:
        wrong = asyncio.run(main())
    finally:
        shutil.rmtree(jail)
    assert wrong == []
