"""Server configuration: one table of settings, four sources, one validation pass.

Every setting is declared once in `SETTINGS`. The command-line flags, the `JETSTREAM_*`
environment variables, the TOML keys and `docs/configuration.md` are all derived from that
table, so they cannot drift apart. Precedence: flags > environment > file > defaults.

This is the only module that reads the environment or configuration files.
"""

from __future__ import annotations

import ipaddress
import os
import textwrap
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from jetstream.errors import ConfigError

ENV_PREFIX = "JETSTREAM_"
DEFAULT_CONFIG_FILE = Path("/etc/jetstream/server.toml")


def _port(value: Any) -> int:
    port = _integer(value)
    if not 0 <= port <= 65535:
        raise ValueError("must be a port number from 0 to 65535")
    return port


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("must be a whole number")
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip(), 10)
    except ValueError:
        raise ValueError(f"must be a whole number, not {value!r}") from None


def _count(value: Any) -> int:
    number = _integer(value)
    if number < 1:
        raise ValueError("must be at least 1")
    return number


def _positive_float(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"must be a number, not {value!r}") from None
    if not number > 0:
        raise ValueError("must be greater than 0")
    return number


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"must be true or false, not {value!r}")


def _host(value: Any) -> str:
    text = str(value).strip()
    if not text:
        raise ValueError("must not be empty")
    if any(c.isspace() for c in text):
        raise ValueError(f"is not a host name or address: {text!r}")
    return text


def _ip_address(value: Any) -> str:
    text = str(value).strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"is not an IP address: {text!r}") from None


def _absolute_path(value: Any) -> Path:
    path = Path(str(value))
    if not path.is_absolute():
        raise ValueError(f"must be an absolute path, not {str(value)!r}")
    return path


_RATE_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def _rate(value: Any) -> int:
    """Bits per second: a whole number, optionally with k, m, g or t (and "bit"), e.g. 200m."""
    text = str(value).strip().lower().removesuffix("bit").removesuffix("bps")
    unit = text[-1:] if text[-1:] in "kmgt" and text[-1:] else ""
    number = text[: len(text) - len(unit)]
    try:
        rate = int(float(number) * _RATE_UNITS[unit])
    except ValueError:
        raise ValueError(f"must be a rate in bit/s like 500m or 1g, not {value!r}") from None
    if rate < 0:
        raise ValueError("must not be negative")
    return rate


def _optional_path(value: Any) -> Path | None:
    return None if str(value).strip() == "" else _absolute_path(value)


def _text(value: Any) -> str:
    return str(value)


def _fingerprint(value: Any) -> str:
    """A SHA-256 certificate fingerprint as lower-case hex; accepts `SHA256:` and colons."""
    text = str(value).strip().lower().removeprefix("sha256:").replace(":", "")
    if text == "":
        return ""
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"must be a SHA-256 fingerprint (64 hex digits), not {value!r}")
    return text


_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def _size(value: Any) -> int:
    """Bytes: a whole number, optionally with k, m or g (binary: 4m is 4 MiB)."""
    text = str(value).strip().lower().removesuffix("ib").removesuffix("b")
    unit = text[-1:] if text[-1:] in ("k", "m", "g") else ""
    try:
        size = int(float(text[: len(text) - len(unit)]) * _SIZE_UNITS[unit])
    except ValueError:
        raise ValueError(f"must be a size in bytes like 4m or 512k, not {value!r}") from None
    if size <= 0:
        raise ValueError("must be greater than 0")
    return size


def _log_level(value: Any) -> str:
    level = str(value).strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("must be one of debug, info, warning, error")
    return level


@dataclass(frozen=True)
class Setting:
    """One configuration setting and every way it can be given."""

    name: str
    """Attribute name on `ServerConfig` and TOML key."""
    parse: Callable[[Any], Any]
    default: Any
    help: str
    multiple: bool = False
    """A list: the flag may repeat; the variable is comma-separated; TOML takes an array."""
    metavar: str = "VALUE"
    env_prefix: str = ENV_PREFIX

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return self.env_prefix + self.name.upper()

    @property
    def is_switch(self) -> bool:
        return self.parse is _boolean


SETTINGS: tuple[Setting, ...] = (
    Setting("api_host", _host, "", "Address the gRPC API listens on; empty means all "
            "interfaces (loopback only unless --api-allow-remote-control).", metavar="HOST"),
    Setting("api_port", _port, 8886, "TCP port of the gRPC control API.", metavar="PORT"),
    Setting("api_socket", _optional_path, Path("/run/jetstream/api.sock"), "Unix socket for "
            "local API access without a password: any local user may connect and acts as "
            "themselves (the kernel says who they are). Empty: off.", metavar="FILE"),
    Setting("api_allow_remote_control", _boolean, False,
            "Let the API answer on non-loopback interfaces. Off: the API binds to loopback only."),
    Setting("api_tls_cert", _optional_path, None, "PEM certificate for the API; default: a "
            "self-signed one made in the state directory on first start.", metavar="FILE"),
    Setting("api_tls_key", _optional_path, None, "PEM private key for --api-tls-cert.",
            metavar="FILE"),
    Setting("api_plaintext", _boolean, False, "Serve the API without TLS. Passwords then cross "
            "the network in clear unless the API is bound to loopback; a warning is logged."),
    Setting("superuser", _text, [], "A user who may see and manage every user's objects "
            "(repeatable; root always may).", multiple=True, metavar="NAME"),
    Setting("supergroup", _text, ["sudo", "wheel", "admin"], "Members of this group are "
            "superusers (repeatable).", multiple=True, metavar="GROUP"),
    Setting("session_ttl", _positive_float, 43200.0, "Lifetime of a login session, in "
            "seconds.", metavar="SECONDS"),
    Setting("api_disable_api_tokens", _boolean, False, "Refuse API tokens (creating and "
            "using them); password sessions still work."),
    Setting("data_idle_timeout", _positive_float, 15.0, "Seconds without a packet from the "
            "peer before a data channel is given up (the transfer then retries).",
            metavar="SECONDS"),
    Setting("transfer_retry_timeout", _positive_float, 900.0, "How long a transfer keeps "
            "retrying, with pauses growing to a minute, while its peer cannot be reached; "
            "it fails after that long without progress.", metavar="SECONDS"),
    Setting("max_outgoing_rate", _rate, None, "Cap on all data this server sends, in bit/s "
            "(e.g. 500m); given at start-up it cannot be changed through the API. 0: none.",
            metavar="RATE"),
    Setting("max_incoming_rate", _rate, None, "Cap on all data this server receives, in "
            "bit/s; like --max-outgoing-rate.", metavar="RATE"),
    Setting("bandwidth_borrowing", _boolean, None, "Let a direction use the other's unused "
            "allowance (both caps must be set)."),
    Setting("sandbox_dir", _text, [], "Confine every user to this directory (repeatable: "
            "the first is the root of each user's view, others appear by path). Placeholders: "
            "%u user, %d domain, %f full user name, %% a percent sign.", multiple=True,
            metavar="DIR"),
    Setting("allow_plaintext_peers", _boolean, False, "Allow destinations whose API is "
            "reached without TLS (tests on trusted networks only)."),
    Setting("recv_port", _port, [8886], "UDP port(s) that receive transfer data (repeatable).",
            multiple=True, metavar="PORT"),
    Setting("recv_host", _ip_address, "0.0.0.0", "Address the UDP receive port(s) bind to.",
            metavar="ADDR"),
    Setting("persistent_state_dir", _absolute_path, Path("/var/lib/jetstream/state"),
            "Directory for the state database and keys (created with mode 0700).",
            metavar="DIR"),
    Setting("trigger_dir", _absolute_path, Path("/var/lib/jetstream/triggers"),
            "Directory of scripts run on events, named after the event (docs/triggers.md); "
            "read again whenever it changes.", metavar="DIR"),
    Setting("trigger_log", _optional_path, None, "File the output of trigger scripts goes "
            "to; default: triggers.log in the state directory.", metavar="FILE"),
    Setting("trigger_timeout", _positive_float, 60.0, "Seconds a trigger script may run "
            "before its process group is killed.", metavar="SECONDS"),
    Setting("trigger_concurrency", _count, 4, "Trigger scripts run at the same time at "
            "most; later runs wait in a bounded queue.", metavar="N"),
    Setting("disable_telemetry", _boolean, False,
            "Turn the Prometheus metrics endpoint off. jetstream never sends telemetry anywhere."),
    Setting("metrics_host", _host, "127.0.0.1", "Address of the Prometheus metrics endpoint.",
            metavar="HOST"),
    Setting("metrics_port", _port, 9886, "TCP port of the Prometheus metrics endpoint.",
            metavar="PORT"),
    Setting("health_port", _port, 0, "TCP port of a plaintext gRPC endpoint on all "
            "interfaces that answers only grpc.health.v1 (Kubernetes' native gRPC probes "
            "cannot use TLS); it serves nothing else. 0: off.", metavar="PORT"),
    Setting("server_name", _text, "", "Friendly name shown in GetServerInfo; default: the "
            "host name.", metavar="NAME"),
    Setting("external_address", _text, "", "Address peers should use to reach this server "
            "(behind NAT); shown in GetServerInfo.", metavar="HOST"),
    Setting("recv_relay_host", _text, "", "Receive through a relay (docs/relay.md): the host of "
            "a `jetstream relay_server`. The server dials it and needs no inbound traffic; "
            "peers reach this server at the relay's public port. Empty: off.", metavar="HOST"),
    Setting("recv_relay_port", _port, 8887, "The relay's control port (its --control-port).",
            metavar="PORT"),
    Setting("recv_relay_fingerprint", _fingerprint, "", "SHA-256 fingerprint of the relay's "
            "TLS certificate, which the relay logs at start; required with --recv-relay-host.",
            metavar="SHA256"),
    Setting("recv_relay_public_port", _port, 0, "Public port to hold at the relay (one of its "
            "--recv-port); 0: the one held last, else any free one.", metavar="PORT"),
    Setting("shutdown_grace", _positive_float, 3.0, "Seconds in-flight API calls may take to "
            "finish on SIGTERM/SIGINT.", metavar="SECONDS"),
    Setting("log_level", _log_level, "INFO", "Logging level: debug, info, warning or error.",
            metavar="LEVEL"),
)

_BY_NAME = {s.name: s for s in SETTINGS}

DATAPATH_ENV = "JETSTREAM_DATAPATH"
DATAPATHS = ("auto", "python")


def datapath_choice(env: Mapping[str, str] | None = None) -> str:
    """The data channel's per-packet path from `JETSTREAM_DATAPATH`: ``auto`` (the compiled
    one where it was built) or ``python`` (the pure-Python reference, e.g. for CI's second
    run). Read once at import by jetstream.datachannel.native, before any config is loaded,
    because the test suite and tools that never load a server config use the data channel."""
    value = (os.environ if env is None else env).get(DATAPATH_ENV, "auto").strip().lower()
    if value not in DATAPATHS:
        raise ConfigError(f"{DATAPATH_ENV}={value!r}: expected one of {', '.join(DATAPATHS)}")
    return value


@dataclass(frozen=True)
class ServerConfig:
    """The validated server configuration; see `SETTINGS` for what each field means."""

    api_host: str = ""
    api_port: int = 8886
    api_socket: Path | None = Path("/run/jetstream/api.sock")
    api_allow_remote_control: bool = False
    api_tls_cert: Path | None = None
    api_tls_key: Path | None = None
    api_plaintext: bool = False
    superuser: tuple[str, ...] = ()
    supergroup: tuple[str, ...] = ("sudo", "wheel", "admin")
    session_ttl: float = 43200.0
    api_disable_api_tokens: bool = False
    allow_plaintext_peers: bool = False
    sandbox_dir: tuple[str, ...] = ()
    data_idle_timeout: float = 15.0
    transfer_retry_timeout: float = 900.0
    max_outgoing_rate: int | None = None
    max_incoming_rate: int | None = None
    bandwidth_borrowing: bool | None = None
    recv_port: tuple[int, ...] = (8886,)
    recv_host: str = "0.0.0.0"
    persistent_state_dir: Path = Path("/var/lib/jetstream/state")
    trigger_dir: Path = Path("/var/lib/jetstream/triggers")
    trigger_log: Path | None = None
    trigger_timeout: float = 60.0
    trigger_concurrency: int = 4
    disable_telemetry: bool = False
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9886
    health_port: int = 0
    server_name: str = ""
    external_address: str = ""
    recv_relay_host: str = ""
    recv_relay_port: int = 8887
    recv_relay_fingerprint: str = ""
    recv_relay_public_port: int = 0
    shutdown_grace: float = 3.0
    log_level: str = "INFO"
    config_file: Path | None = field(default=None)

    def __post_init__(self) -> None:
        if not self.recv_relay_host:
            return
        if not self.recv_relay_fingerprint:
            raise ConfigError("--recv-relay-host needs --recv-relay-fingerprint: the SHA-256 "
                              "fingerprint the relay logs at start")
        if self.api_plaintext:
            raise ConfigError("--recv-relay-host needs TLS on the API (peers reach it through "
                              "the relay, which must see only ciphertext): drop --api-plaintext")

    @property
    def api_bind_host(self) -> str:
        """Where the API socket binds: loopback unless remote control is allowed."""
        if not self.api_allow_remote_control:
            return self.api_host if is_loopback(self.api_host) else "127.0.0.1"
        return self.api_host or "[::]"


RELAY_ENV_PREFIX = "JETSTREAM_RELAY_"
DEFAULT_RELAY_CONFIG_FILE = Path("/etc/jetstream/relay.toml")


def _relay(name: str, parse: Callable[[Any], Any], default: Any, help_text: str,
           **extra: Any) -> Setting:
    return Setting(name, parse, default, help_text, env_prefix=RELAY_ENV_PREFIX, **extra)


RELAY_SETTINGS: tuple[Setting, ...] = (
    _relay("control_host", _text, "", "Address the control port binds to; empty: every "
           "interface. Servers dial it; only the inside network needs to reach it.",
           metavar="HOST"),
    _relay("control_port", _port, 8887, "TCP port servers dial to register (TLS).",
           metavar="PORT"),
    _relay("host", _ip_address, "0.0.0.0", "Address the public ports (UDP and TCP) bind to.",
           metavar="ADDR"),
    _relay("recv_port", _port, [8886], "Public port opened on behalf of one server, UDP for "
           "its data channel and TCP for its control API (repeatable: one per server).",
           multiple=True, metavar="PORT"),
    _relay("public_address", _text, "", "Host name or address peers use to reach the public "
           "ports, told to servers; empty: the address the peer dialled.", metavar="HOST"),
    _relay("trust_server", _fingerprint, [], "SHA-256 fingerprint of the API certificate of a "
           "server this relay serves (`jetstream status` on the server shows it; repeatable).",
           multiple=True, metavar="SHA256"),
    _relay("persistent_state_dir", _absolute_path, Path("/var/lib/jetstream/relay"),
           "Directory for the relay's TLS key and certificate (created with mode 0700).",
           metavar="DIR"),
    _relay("control_tls_cert", _optional_path, None, "PEM certificate for the control port; "
           "default: a self-signed one made in the state directory on first start.",
           metavar="FILE"),
    _relay("control_tls_key", _optional_path, None, "PEM private key for --control-tls-cert.",
           metavar="FILE"),
    _relay("queue_limit", _size, "4m", "Datagram bytes held for one server while its link "
           "is busy; beyond it datagrams are dropped (and counted), so a slow server cannot "
           "grow the relay's memory.", metavar="BYTES"),
    *(replace(_BY_NAME[name], env_prefix=RELAY_ENV_PREFIX, **changed) for name, changed in (
        ("disable_telemetry", {"help": "Turn the Prometheus metrics endpoint off."}),
        ("metrics_host", {}), ("metrics_port", {"default": 9887}), ("log_level", {}))),
)

_RELAY_BY_NAME = {s.name: s for s in RELAY_SETTINGS}


@dataclass(frozen=True)
class RelayConfig:
    """The validated relay configuration; see `RELAY_SETTINGS` for what each field means."""

    control_host: str = ""
    control_port: int = 8887
    host: str = "0.0.0.0"
    recv_port: tuple[int, ...] = (8886,)
    public_address: str = ""
    trust_server: tuple[str, ...] = ()
    persistent_state_dir: Path = Path("/var/lib/jetstream/relay")
    control_tls_cert: Path | None = None
    control_tls_key: Path | None = None
    queue_limit: int = 4 << 20
    disable_telemetry: bool = False
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9887
    log_level: str = "INFO"
    config_file: Path | None = field(default=None)

    def __post_init__(self) -> None:
        if len(set(self.recv_port)) != len(self.recv_port):
            raise ConfigError("--recv-port: a port is listed twice")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _parse_one(setting: Setting, raw: Any, source: str) -> Any:
    try:
        if setting.multiple:
            items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
            values = [setting.parse(item) for item in items if str(item).strip() != ""]
            if not values:
                raise ValueError("needs at least one value")
            return tuple(values)
        return setting.parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _from_file(path: Path, table: str = "server",
               by_name: Mapping[str, Setting] = _BY_NAME) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: not valid TOML: {exc}") from None
    section = data.get(table, data)
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path}: [{table}] must be a table")
    values: dict[str, Any] = {}
    for key, raw in section.items():
        name = key.replace("-", "_")
        setting = by_name.get(name)
        if setting is None:
            raise ConfigError(f"config file {path}: unknown setting {key!r}")
        values[name] = _parse_one(setting, raw, f"{key} in {path}")
    return values


def _from_env(env: Mapping[str, str],
              settings: Iterable[Setting] = SETTINGS) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for setting in settings:
        if setting.env in env:
            values[setting.name] = _parse_one(setting, env[setting.env], setting.env)
    return values


def _from_flags(flags: Mapping[str, Any],
                by_name: Mapping[str, Setting] = _BY_NAME) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, raw in flags.items():
        if raw is None or (isinstance(raw, tuple | list) and not raw):
            continue
        setting = by_name[name]
        values[name] = _parse_one(setting, raw, setting.flag)
    return values


def load_config(
    flags: Mapping[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> ServerConfig:
    """Merge defaults, the TOML file, the environment and the flags, in rising precedence.

    `config_file` None means: `JETSTREAM_CONFIG` if set, else the default path if it exists.
    """
    env = os.environ if env is None else env
    path = _config_path(config_file, env, ENV_PREFIX, DEFAULT_CONFIG_FILE)
    merged: dict[str, Any] = {}
    if path is not None:
        merged.update(_from_file(path))
    merged.update(_from_env(env))
    merged.update(_from_flags(flags))
    return ServerConfig(**merged, config_file=path)


def notify_socket(env: Mapping[str, str] | None = None) -> str:
    """$NOTIFY_SOCKET: where a service manager (systemd, `jetstream start`) waits for the
    server's READY=1 (jetstream/sdnotify.py); empty when none does."""
    return (os.environ if env is None else env).get("NOTIFY_SOCKET", "")


def load_relay_config(
    flags: Mapping[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> RelayConfig:
    """`load_config` for `jetstream relay_server`: `JETSTREAM_RELAY_*` variables and the
    `[relay]` table of `JETSTREAM_RELAY_CONFIG` or /etc/jetstream/relay.toml."""
    env = os.environ if env is None else env
    path = _config_path(config_file, env, RELAY_ENV_PREFIX, DEFAULT_RELAY_CONFIG_FILE)
    merged: dict[str, Any] = {}
    if path is not None:
        merged.update(_from_file(path, "relay", _RELAY_BY_NAME))
    merged.update(_from_env(env, RELAY_SETTINGS))
    merged.update(_from_flags(flags, _RELAY_BY_NAME))
    return RelayConfig(**merged, config_file=path)


def _config_path(given: Path | None, env: Mapping[str, str], prefix: str,
                 default: Path) -> Path | None:
    if given is not None:
        return given
    if env.get(prefix + "CONFIG"):
        return Path(env[prefix + "CONFIG"])
    return default if default.is_file() else None


def setting_rows(settings: Iterable[Setting] = SETTINGS
                 ) -> Iterable[tuple[str, str, str, str, str]]:
    """(flag, environment variable, TOML key, default, help) for the documentation."""
    for s in settings:
        default = s.default
        if default is None:
            shown = "(none)"
        elif isinstance(default, list | tuple):
            shown = ", ".join(str(v) for v in default) or "(none)"
        elif isinstance(default, bool):
            shown = "true" if default else "false"
        else:
            shown = str(default) if str(default) != "" else "(empty)"
        yield s.flag, s.env, s.name, shown, s.help


def render_configuration_doc() -> str:
    """The body of docs/configuration.md; a test keeps the file equal to this."""
    lines = [
        "# Configuring `jetstream server`",
        "",
        "Every setting can be given four ways; the first that is present wins:",
        "",
        "1. a command-line flag (`jetstream server --api-port 9000`);",
        "2. an environment variable (`JETSTREAM_API_PORT=9000`; lists are comma-separated);",
        "3. the TOML file named by `--config` or `JETSTREAM_CONFIG`, else "
        f"`{DEFAULT_CONFIG_FILE}` if it exists (keys at top level or in a `[server]` table;",
        "   lists are arrays);",
        "4. the default.",
        "",
        "An invalid value stops the server with one line naming the setting and the reason, "
        "and exit code 2.",
        "",
        "This page is generated from `jetstream/config.py` (`SETTINGS`); "
        "a test keeps the two equal.",
        "",
        "| flag | environment | TOML key | default | meaning |",
        "|---|---|---|---|---|",
    ]
    for flag, env, key, default, help_text in setting_rows():
        lines.append(f"| `{flag}` | `{env}` | `{key}` | `{default}` | {help_text} |")
    lines += [
        "",
        "Example `/etc/jetstream/server.toml`:",
        "",
        "```toml",
        "[server]",
        "api_port = 8886",
        "recv_port = [8886, 8887]",
        'persistent_state_dir = "/var/lib/jetstream/state"',
        "disable_telemetry = false",
        "```",
        "",
        "## `jetstream relay_server`",
        "",
        "The relay (docs/relay.md) reads its settings the same four ways, from "
        "`JETSTREAM_RELAY_*` variables and",
        f"the `[relay]` table of `--config`, `JETSTREAM_RELAY_CONFIG` or "
        f"`{DEFAULT_RELAY_CONFIG_FILE}`.",
        "",
        "| flag | environment | TOML key | default | meaning |",
        "|---|---|---|---|---|",
    ]
    for flag, env, key, default, help_text in setting_rows(RELAY_SETTINGS):
        lines.append(f"| `{flag}` | `{env}` | `{key}` | `{default}` | {help_text} |")
    lines.append("")
    return "\n".join(lines)



def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_sample_config() -> str:
    """deploy/server.toml, installed as /etc/jetstream/server.toml: every setting, commented
    out at its default; a test keeps the file equal to this."""
    lines = [
        f"# {DEFAULT_CONFIG_FILE}: settings of `jetstream server` (docs/configuration.md).",
        "# Every setting is listed, commented out at its default: uncomment a line to change",
        "# it. A flag (--api-port) or an environment variable (JETSTREAM_API_PORT) given to",
        "# the server overrides what is set here. Generated from jetstream/config.py.",
        "",
        "[server]",
    ]
    for s in SETTINGS:
        lines += ["", *(f"# {text}" for text in _wrap(s.help, 86)),
                  f"# flag {s.flag}, environment {s.env}"]
        lines.append(_sample_line(s))
    return "\n".join(lines) + "\n"


def _sample_line(setting: Setting) -> str:
    """`#name = default`, or a note where no value written in the file means the default
    (none, an empty host, an empty list)."""
    if setting.default is not None:
        value = _toml_value(setting.default)
        try:
            _parse_one(setting, tomllib.loads(f"v = {value}")["v"], setting.name)
        except ConfigError:
            pass
        else:
            return f"#{setting.name} = {value}"
    return f"# {setting.name}: unset by default"


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width)
