"""How `jetstreamctl` speaks: exit codes, one-line errors, tables for people, JSON for scripts.

Stdout carries the result only: a table or text for a person, or exactly one JSON document
with `--output json`. Messages, warnings and progress go to stderr. Colour follows rich's
rules, so `NO_COLOR` turns it off and nothing is coloured when the stream is not a terminal.
"""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console
from rich.table import Table

# Exit codes (docs/api.md and `jetstreamctl --help` list them; scripts rely on them).
EXIT_OK = 0
EXIT_FAILURE = 1
"""Anything else: the server refused (invalid, already exists, wrong state), internal errors."""
EXIT_USAGE = 2
"""Bad command line: unknown option, missing argument, malformed value."""
EXIT_AUTH = 3
"""Not logged in, wrong password, expired or revoked token, or not allowed (permission)."""
EXIT_NOT_FOUND = 4
"""The named transfer, destination, file... does not exist (or is not yours)."""
EXIT_TRANSFER_FAILED = 5
"""The transfer that was followed ended FAILED or CANCELLED."""
EXIT_UNAVAILABLE = 6
"""The server cannot be reached (down, wrong address, timed out)."""
EXIT_IDENTITY = 7
"""The server's TLS certificate is not the one pinned for it (known_hosts)."""
EXIT_INTERRUPTED = 130
"""Ctrl-C; a transfer that was being followed keeps running on the server."""

EXIT_CODES = (
    (EXIT_OK, "success"),
    (EXIT_FAILURE, "failure (the server refused, or an unexpected error)"),
    (EXIT_USAGE, "usage error (bad option or argument)"),
    (EXIT_AUTH, "authentication or permission (not logged in, bad password, expired token)"),
    (EXIT_NOT_FOUND, "not found (transfer, destination, file...)"),
    (EXIT_TRANSFER_FAILED, "the transfer failed or was cancelled"),
    (EXIT_UNAVAILABLE, "server unreachable or timed out"),
    (EXIT_IDENTITY, "server identity changed (TLS fingerprint differs from the pinned one)"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C)"),
)

_EXIT_FOR_STATUS = {
    grpc.StatusCode.UNAUTHENTICATED: EXIT_AUTH,
    grpc.StatusCode.PERMISSION_DENIED: EXIT_AUTH,
    grpc.StatusCode.NOT_FOUND: EXIT_NOT_FOUND,
    grpc.StatusCode.UNAVAILABLE: EXIT_UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: EXIT_UNAVAILABLE,
}


class CtlError(Exception):
    """A failure to report as one line (and, with --output json, an error document)."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE, status: str = "") -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.status = status


def rpc_failure(exc: grpc.RpcError, where: str) -> CtlError:
    """A grpc error as a CtlError: the status decides the exit code, the details the text."""
    code: grpc.StatusCode = exc.code()
    details: str = exc.details() or code.name.lower()
    if code is grpc.StatusCode.UNAVAILABLE and "failed to connect" in details.lower():
        details = f"cannot connect ({details})"
    if code is grpc.StatusCode.UNIMPLEMENTED:
        details = f"the server does not offer this yet ({details})"
    prefix = f"{where}: " if where else ""
    return CtlError(f"{prefix}{details}", _EXIT_FOR_STATUS.get(code, EXIT_FAILURE), code.name)


# ---------------------------------------------------------------------------------------------
# Values for people


def human_bytes(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_rate(bps: float) -> str:
    for unit in ("bit/s", "kbit/s", "Mbit/s", "Gbit/s"):
        if abs(bps) < 1000 or unit == "Gbit/s":
            return f"{bps:.0f} {unit}" if unit == "bit/s" else f"{bps:.1f} {unit}"
        bps /= 1000
    raise AssertionError("unreachable")


def parse_rate(text: str) -> int:
    """"100M", "1.5G", "500k", "2Gbit/s", "0" -> bit/s (decimal units, like every link)."""
    value = text.strip().lower().replace("bit/s", "").replace("bps", "").replace("b/s", "")
    value = value.rstrip("b").strip()
    factor = 1
    for suffix, multiple in (("k", 10**3), ("m", 10**6), ("g", 10**9), ("t", 10**12)):
        if value.endswith(suffix):
            value, factor = value[:-1], multiple
            break
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{text!r} is not a rate (examples: 0, 500k, 100M, 1.5G)") from None
    if number < 0:
        raise ValueError(f"{text!r}: a rate cannot be negative")
    return int(number * factor)


def human_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def human_time(stamp: Timestamp) -> str:
    if not stamp.seconds and not stamp.nanos:
        return "-"
    when = stamp.ToDatetime(tzinfo=datetime.UTC).astimezone()
    return when.strftime("%Y-%m-%d %H:%M:%S")


def duration_seconds(value: Duration) -> float:
    return value.seconds + value.nanos / 1e9


def enum_label(name: str) -> str:
    """`TRANSFER_STATE_RUNNING` -> `running` (the part after the enum's prefix)."""
    for prefix in ("TRANSFER_STATE_", "MANIFEST_STATE_", "FILE_KIND_", "TRANSFER_FILE_STATE_",
                   "TRANSFER_DIRECTION_", "CREDENTIAL_KIND_", "EVENT_SEVERITY_",
                   "OVERWRITE_POLICY_", "RATE_POLICY_", "TRANSFER_UPDATE_KIND_",
                   "TRIGGER_OUTCOME_", "AFTER_DELIVERY_", "WATCH_STATE_"):
        if name.startswith(prefix):
            return name[len(prefix):].lower().replace("_", "-")
    return name.lower()


def short_name(name: str) -> str:
    """`transfers/abc` -> `abc`."""
    return name.rsplit("/", 1)[-1]


def as_dict(message: Message) -> dict[str, Any]:
    """The proto3 JSON mapping with field names as in the .proto files and every field shown.

    As that mapping says, 64-bit integers are strings, bytes are base64, enums are names and
    times are RFC 3339 strings.
    """
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


# ---------------------------------------------------------------------------------------------
# Where it goes


@dataclass
class Output:
    """Result printer for one command run."""

    json_mode: bool = False
    quiet: bool = False

    def __post_init__(self) -> None:
        # Not a terminal: no width to fit, so never wrap a table row (scripts grep lines).
        width = None if sys.stdout.isatty() else 1000
        self.out = Console(soft_wrap=False, highlight=False, width=width)
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)

    def result(self, document: Any, human: str | Table | None = None) -> None:
        """The command's result: `document` as JSON, or the human rendering (if any)."""
        if self.json_mode:
            sys.stdout.write(json.dumps(document, indent=2, sort_keys=False, default=str) + "\n")
            sys.stdout.flush()
        elif human is not None and not self.quiet:
            if isinstance(human, str):
                sys.stdout.write(human + ("" if human.endswith("\n") else "\n"))
                sys.stdout.flush()
            else:
                self.out.print(human)

    def note(self, text: str) -> None:
        """A message for the person (stderr), silent with --quiet."""
        if not self.quiet:
            self.err.print(text, markup=False)

    def error(self, program: str, error: CtlError) -> None:
        sys.stderr.write(f"{program}: error: {error}\n")
        sys.stderr.flush()
        if self.json_mode:
            document = {"error": {"message": str(error), "exit_code": error.exit_code,
                                  "status": error.status}}
            sys.stdout.write(json.dumps(document, indent=2) + "\n")
            sys.stdout.flush()


def table(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> Table:
    """A plain table: a header line and aligned columns, no boxes (easy to read and grep)."""
    grid = Table(box=None, show_edge=False, pad_edge=False, header_style="bold",
                 padding=(0, 2, 0, 0))
    for column in columns:
        grid.add_column(column.upper(), overflow="fold")
    for row in rows:
        grid.add_row(*(str(cell) for cell in row))
    return grid


def key_values(pairs: Iterable[tuple[str, object]]) -> str:
    items = list(pairs)
    width = max((len(key) for key, _ in items), default=0)
    return "\n".join(f"{key + ':':<{width + 1}} {value}" for key, value in items)
