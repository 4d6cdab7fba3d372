"""Server configuration: one table of settings, four sources, one validation pass.

Every setting is declared once in `SETTINGS`. The command-line flags, the `JETSTREAM_*`
environment variables, the TOML keys and `docs/configuration.md` are all derived from that
table, so they cannot drift apart. Precedence: flags > environment > file > defaults.

This is the only module that reads the environment or configuration files.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
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

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

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
            "Directory of scripts run on transfer events, named after the event.",
            metavar="DIR"),
    Setting("disable_telemetry", _boolean, False,
            "Turn the Prometheus metrics endpoint off. jetstream never sends telemetry anywhere."),
    Setting("metrics_host", _host, "127.0.0.1", "Address of the Prometheus metrics endpoint.",
            metavar="HOST"),
    Setting("metrics_port", _port, 9886, "TCP port of the Prometheus metrics endpoint.",
            metavar="PORT"),
    Setting("server_name", _text, "", "Friendly name shown in GetServerInfo; default: the "
            "host name.", metavar="NAME"),
    Setting("external_address", _text, "", "Address peers should use to reach this server "
            "(behind NAT); shown in GetServerInfo.", metavar="HOST"),
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
    max_outgoing_rate: int | None = None
    max_incoming_rate: int | None = None
    bandwidth_borrowing: bool | None = None
    recv_port: tuple[int, ...] = (8886,)
    recv_host: str = "0.0.0.0"
    persistent_state_dir: Path = Path("/var/lib/jetstream/state")
    trigger_dir: Path = Path("/var/lib/jetstream/triggers")
    disable_telemetry: bool = False
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9886
    server_name: str = ""
    external_address: str = ""
    shutdown_grace: float = 3.0
    log_level: str = "INFO"
    config_file: Path | None = field(default=None)

    @property
    def api_bind_host(self) -> str:
        """Where the API socket binds: loopback unless remote control is allowed."""
        if not self.api_allow_remote_control:
            return self.api_host if is_loopback(self.api_host) else "127.0.0.1"
        return self.api_host or "[::]"


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


def _from_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: not valid TOML: {exc}") from None
    section = data.get("server", data)
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path}: [server] must be a table")
    values: dict[str, Any] = {}
    for key, raw in section.items():
        name = key.replace("-", "_")
        setting = _BY_NAME.get(name)
        if setting is None:
            raise ConfigError(f"config file {path}: unknown setting {key!r}")
        values[name] = _parse_one(setting, raw, f"{key} in {path}")
    return values


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.env in env:
            values[setting.name] = _parse_one(setting, env[setting.env], setting.env)
    return values


def _from_flags(flags: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, raw in flags.items():
        if raw is None or (isinstance(raw, tuple | list) and not raw):
            continue
        setting = _BY_NAME[name]
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
    path = config_file
    if path is None and env.get(ENV_PREFIX + "CONFIG"):
        path = Path(env[ENV_PREFIX + "CONFIG"])
    elif path is None and DEFAULT_CONFIG_FILE.is_file():
        path = DEFAULT_CONFIG_FILE
    merged: dict[str, Any] = {}
    if path is not None:
        merged.update(_from_file(path))
    merged.update(_from_env(env))
    merged.update(_from_flags(flags))
    return ServerConfig(**merged, config_file=path)


def setting_rows() -> Iterable[tuple[str, str, str, str, str]]:
    """(flag, environment variable, TOML key, default, help) for the documentation."""
    for s in SETTINGS:
        default = s.default
        if default is None:
            shown = "(none)"
        elif isinstance(default, list | tuple):
            shown = ", ".join(str(v) for v in default)
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
    ]
    return "\n".join(lines)

