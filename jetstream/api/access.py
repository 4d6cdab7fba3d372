"""Who may call each RPC: one table, enforced by the call interceptor, rendered into
docs/security.md.

Why one table: rules spread over servicers go stale without anyone noticing (a read-only
token could once create destinations although the API said it could not). Here every RPC
has exactly one rule; a method without one is refused (fail closed); tests check that every
RPC in the protos has a rule, that the documentation is this table, and call every RPC with
every kind of credentials. Finer rules that depend on the request (which objects, which
paths) stay in the service layer, and the `scope` column says which.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from jetstream.errors import PermissionDenied
from jetstream.services.auth import Caller


class Who(StrEnum):
    ANYONE = "anyone"
    """No credentials: what a client needs before it can log in."""
    USER = "user"
    """Any authenticated caller: session, API token, or a local user on the Unix socket."""
    SUPERUSER = "superuser"
    """A superuser (--superuser/--supergroup, root); an API token only if made with
    `superuser`."""
    RELAY_PEER = "relay peer"
    """Served by `jetstream relay_server`, not the server: a server the relay trusts."""


@dataclass(frozen=True)
class Rule:
    who: Who
    writes: bool
    """Changes files or the server's configuration: refused to read-only tokens."""
    scope: str
    """What the service layer narrows further, per request."""
    proofs: tuple[str, ...]
    """Tests (`path::function`) that show the scope holds; the access matrix test shows
    `who` and `writes` for every RPC."""


OWN = "own objects; superusers all; others' are NOT_FOUND"
LISTS = "own objects; `owner` other than the caller: superusers only"
VIEW = "caller's sandbox view, the token's allowed paths"
MATRIX = "tests/server/test_access.py::test_every_rpc_follows_its_rule"
FILES = "tests/server/test_files.py::test_browsing_and_changing_files_as_the_user"
TOKEN_PATHS = "tests/server/test_files.py::test_api_token_allowed_paths_and_read_only"
TOKENS = "tests/server/test_api_tokens.py::test_a_narrow_token_cannot_make_a_wider_one"
DESTS = "tests/server/test_destinations.py::test_destination_lifecycle_and_visibility"
MANIFESTS = ("tests/server/test_manifests.py::"
             "test_unreadable_source_ends_in_error_and_others_cannot_see")
MAPPINGS = ("tests/server/test_sandbox_mappings.py::"
            "test_superusers_manage_mappings_and_changes_apply_at_once")
EVENTS = "tests/server/test_sandbox_mappings.py::test_event_log_records_logins_and_mapping_changes"
BANDWIDTH = "tests/transfers/test_bandwidth.py::test_limits_api_superuser_persistence_and_fixed"
PUSH = "tests/transfers/test_push.py::test_push_a_tree_arrives_identical"
PULL = "tests/transfers/test_pull.py::test_pull_of_an_unreadable_file_fails_naming_it"
CONTROL = "tests/transfers/test_failures.py::test_pause_resume_and_cancel_a_running_transfer"
SOURCES = "tests/transfers/test_sources.py::test_list_sources_after_pushes"
WATCHES = "tests/watches/test_watch_api.py::test_who_may_do_what_and_refused_input"
TRIGGERS = ("tests/triggers/test_triggers.py::"
            "test_each_event_fires_its_script_with_the_documented_arguments")
RELAY_TRUST = "tests/relay/test_relay_link.py::test_the_relay_serves_only_servers_it_trusts"
RELAY_STRANGERS = ("tests/relay/test_relay_link.py::"
                   "test_strangers_get_nothing_from_the_control_port")
TRANSFER_SCOPE = "tests/transfers/test_ownership.py::test_transfers_of_others_are_not_found"

_V1 = "/jetstream.v1."

RULES: dict[str, Rule] = {
    # AuthService
    _V1 + "AuthService/Login": Rule(Who.ANYONE, False, "PAM; throttled per user and source",
                                    ("tests/auth/test_pam_login.py::test_every_failure_looks_the_same",
                                     "tests/security/test_login_flood.py::"
                                     "test_a_login_flood_from_many_addresses")),
    _V1 + "AuthService/Logout": Rule(Who.USER, False, "ends the calling session only", ()),
    _V1 + "AuthService/WhoAmI": Rule(Who.USER, False, "the caller", ()),
    _V1 + "AuthService/CreateApiToken": Rule(
        Who.USER, False, "never wider than the calling credentials (paths, read-only, superuser)",
        (TOKENS, "tests/server/test_api_tokens.py::"
                 "test_only_a_superuser_may_ask_for_a_superuser_token")),
    _V1 + "AuthService/GetApiToken": Rule(Who.USER, False, "own tokens", ()),
    _V1 + "AuthService/ListApiTokens": Rule(Who.USER, False, "own tokens", ()),
    _V1 + "AuthService/RevokeApiToken": Rule(Who.USER, False, "own tokens", ()),
    # ServerService
    _V1 + "ServerService/GetServerInfo": Rule(Who.ANYONE, False, "public facts only", ()),
    _V1 + "ServerService/ListEvents": Rule(Who.USER, False, LISTS, (EVENTS,)),
    _V1 + "ServerService/GetBandwidthLimits": Rule(Who.USER, False, "server-wide limits",
                                                   (BANDWIDTH,)),
    _V1 + "ServerService/UpdateBandwidthLimits": Rule(Who.SUPERUSER, True, "", (BANDWIDTH,)),
    _V1 + "ServerService/ListSandboxMappings": Rule(Who.SUPERUSER, False, "", (MAPPINGS,)),
    _V1 + "ServerService/SetSandboxMapping": Rule(Who.SUPERUSER, True, "", (MAPPINGS,)),
    _V1 + "ServerService/DeleteSandboxMapping": Rule(Who.SUPERUSER, True, "", (MAPPINGS,)),
    # FileService
    _V1 + "FileService/ListDirectory": Rule(Who.USER, False, VIEW, (FILES, TOKEN_PATHS)),
    _V1 + "FileService/Stat": Rule(Who.USER, False, VIEW, (FILES,)),
    _V1 + "FileService/MakeDirectory": Rule(Who.USER, True, VIEW + ", as the user",
                                            (FILES, TOKEN_PATHS)),
    _V1 + "FileService/Remove": Rule(Who.USER, True, VIEW + ", as the user", (FILES,)),
    _V1 + "FileService/Rename": Rule(Who.USER, True, VIEW + ", as the user", (FILES,)),
    # DestinationService
    _V1 + "DestinationService/CreateDestination": Rule(Who.USER, True, "owned by the caller",
                                                       (DESTS,)),
    _V1 + "DestinationService/GetDestination": Rule(Who.USER, False, OWN, (DESTS,)),
    _V1 + "DestinationService/ListDestinations": Rule(Who.USER, False, LISTS, (DESTS,)),
    _V1 + "DestinationService/UpdateDestination": Rule(Who.USER, True, OWN, (DESTS,)),
    _V1 + "DestinationService/DeleteDestination": Rule(Who.USER, True, OWN, (DESTS,)),
    _V1 + "DestinationService/TestDestination": Rule(Who.USER, False, OWN, (DESTS,)),
    # ManifestService
    _V1 + "ManifestService/CreateManifest": Rule(Who.USER, False,
                                                 VIEW + "; files read as the user", (MANIFESTS,)),
    _V1 + "ManifestService/GetManifest": Rule(Who.USER, False, OWN, (MANIFESTS,)),
    _V1 + "ManifestService/WaitManifest": Rule(Who.USER, False, OWN, (MANIFESTS,)),
    _V1 + "ManifestService/ListManifests": Rule(Who.USER, False, LISTS, (MANIFESTS,)),
    _V1 + "ManifestService/ListManifestFiles": Rule(Who.USER, False, OWN, (MANIFESTS,)),
    _V1 + "ManifestService/DeleteManifest": Rule(Who.USER, False, OWN, (MANIFESTS,)),
    # TransferService
    _V1 + "TransferService/CreateTransfer": Rule(
        Who.USER, False, "own destinations and manifests; a PULL writes here, so read-only "
        "tokens may not pull and its destination path is checked in the caller's view",
        (PUSH, PULL)),
    _V1 + "TransferService/GetTransfer": Rule(Who.USER, False, OWN, (TRANSFER_SCOPE,)),
    _V1 + "TransferService/ListTransfers": Rule(Who.USER, False, LISTS, (TRANSFER_SCOPE,)),
    _V1 + "TransferService/WatchTransfer": Rule(Who.USER, False, OWN, (TRANSFER_SCOPE,)),
    _V1 + "TransferService/UpdateTransfer": Rule(Who.USER, False, OWN, (CONTROL,)),
    _V1 + "TransferService/PauseTransfer": Rule(Who.USER, False, OWN, (CONTROL,)),
    _V1 + "TransferService/ResumeTransfer": Rule(Who.USER, False, OWN, (CONTROL,)),
    _V1 + "TransferService/CancelTransfer": Rule(Who.USER, False, OWN, (CONTROL,)),
    _V1 + "TransferService/DeleteTransfer": Rule(Who.USER, False, OWN, (TRANSFER_SCOPE,)),
    _V1 + "TransferService/ListTransferFiles": Rule(Who.USER, False, OWN, (TRANSFER_SCOPE,)),
    _V1 + "TransferService/GetIncomingTransfer": Rule(Who.USER, False, OWN, (SOURCES,)),
    _V1 + "TransferService/ListIncomingTransfers": Rule(Who.USER, False, LISTS, (SOURCES,)),
    _V1 + "TransferService/ListSources": Rule(Who.USER, False, LISTS, (SOURCES,)),
    # PeerService: called by another jetstream server with the API token of a destination.
    _V1 + "PeerService/OpenReceiveSession": Rule(
        Who.USER, True, VIEW + "; files written as the user", (PUSH,)),
    _V1 + "PeerService/QueryReceivedState": Rule(Who.USER, True, "own incoming transfers",
                                                 ("tests/faults/test_kill_loop.py::"
                                                  "test_kill_9_at_random_points_of_one_transfer",)),
    _V1 + "PeerService/CompleteReceiveSession": Rule(Who.USER, True, "own sessions", (PUSH,)),
    _V1 + "PeerService/OpenSendSession": Rule(Who.USER, False, VIEW + "; files read as the user",
                                              (PULL,)),
    _V1 + "PeerService/CompleteSendSession": Rule(Who.USER, False, "own sessions", (PULL,)),
    # WatchService
    _V1 + "WatchService/CreateWatch": Rule(
        Who.USER, True, VIEW + "; the caller's own destinations; files sent (and deleted or "
        "moved) as the user", (WATCHES,)),
    _V1 + "WatchService/GetWatch": Rule(Who.USER, False, OWN, (WATCHES,)),
    _V1 + "WatchService/ListWatches": Rule(Who.USER, False, LISTS, (WATCHES,)),
    _V1 + "WatchService/DeleteWatch": Rule(Who.USER, True, OWN, (WATCHES,)),
    # TriggerService
    _V1 + "TriggerService/ListTriggers": Rule(Who.SUPERUSER, False, "", (TRIGGERS,)),
    # RelayService: served by `jetstream relay_server` to the servers it trusts.
    _V1 + "RelayService/Control": Rule(
        Who.RELAY_PEER, False, "a server whose certificate is in --trust-server and signs the "
        "relay's challenge; its own registration", (RELAY_TRUST, RELAY_STRANGERS)),
    _V1 + "RelayService/Tunnel": Rule(Who.RELAY_PEER, False,
                                      "the connections of its own registration",
                                      (RELAY_TRUST, RELAY_STRANGERS)),
}


def is_public(method: str) -> bool:
    rule = RULES.get(method)
    return rule is not None and rule.who is Who.ANYONE


def authorize(method: str, caller: Caller) -> None:
    """Refuse `caller` if the method's rule does not admit them (or it has no rule)."""
    rule = RULES.get(method)
    name = method.rpartition("/")[2]
    if rule is None or rule.who is Who.RELAY_PEER:
        raise PermissionDenied(f"{name} has no access rule on this server")
    if rule.who is Who.SUPERUSER and not caller.is_superuser:
        raise PermissionDenied(f"only a superuser may call {name}")
    if rule.writes and caller.token.read_only:
        raise PermissionDenied(f"read-only credentials may not call {name}")


def markdown_table() -> str:
    """The table docs/security.md carries (tests check the two are the same)."""
    lines = ["| RPC | who may call it | read-only tokens | scope | proved by |",
             "|---|---|---|---|---|"]
    for method, rule in RULES.items():
        service, _, name = method.removeprefix(_V1).partition("/")
        shown = rule.proofs if rule.who is Who.RELAY_PEER else (MATRIX, *rule.proofs)
        proofs = "<br>".join(f"`{p.rpartition('::')[2]}`" for p in shown)
        tokens = "–" if rule.who is Who.RELAY_PEER else "refused" if rule.writes else "allowed"
        lines.append(f"| {service}.{name} | {rule.who} | {tokens} | {rule.scope or '–'} | "
                     f"{proofs} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
