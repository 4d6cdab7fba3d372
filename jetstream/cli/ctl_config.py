"""What `jetstreamctl` remembers between runs: credentials and pinned server identities.

Both live in the user's XDG config directory, `$XDG_CONFIG_HOME/jetstream/` (default
`~/.config/jetstream/`, created with mode 0700):

- `credentials.json` (mode 0600): one entry per server, the session token or API token
  secret for it and the user name, plus which server commands use when `--server` is not
  given (the last one logged in to). Passwords are never written.
- `known_hosts` (mode 0600): one line per server, `ADDRESS SHA256:<hex>`, the SHA-256 of its
  API certificate, recorded on first contact like ssh's known_hosts. A server presenting a
  different certificate is refused until its line is removed (`jetstreamctl logout --forget`
  or by editing the file).

Files are replaced atomically (write a temporary file, then rename), so a crash never leaves
half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

LOCAL = "local"
"""The server name that means the local server, reached over its Unix socket."""
CREDENTIALS_FILE = "credentials.json"
KNOWN_HOSTS_FILE = "known_hosts"


class ConfigFileError(Exception):
    """A config file exists but cannot be read; the message names it."""


def config_dir() -> Path:
    """`$XDG_CONFIG_HOME/jetstream`, else `~/.config/jetstream` (XDG Base Directory spec)."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / "jetstream"


@dataclass
class ServerLogin:
    """Credentials for one server. `kind` is "session" (from a password) or "api_token"."""

    username: str
    token: str
    kind: str = "session"
    expire_time: str = ""
    plaintext: bool = False


@dataclass
class Credentials:
    servers: dict[str, ServerLogin] = field(default_factory=dict)
    current: str = ""


def _write_private(path: Path, text: str) -> None:
    """Replace `path` atomically with a file of mode 0600 in a directory of mode 0700."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigFileError(f"cannot read {path}: {exc.strerror}") from None


def load_credentials(directory: Path | None = None) -> Credentials:
    path = (directory or config_dir()) / CREDENTIALS_FILE
    text = _read(path)
    if text is None:
        return Credentials()
    try:
        raw: dict[str, Any] = json.loads(text)
        servers = {name: ServerLogin(**entry) for name, entry in raw.get("servers", {}).items()}
        return Credentials(servers, str(raw.get("current", "")))
    except (ValueError, TypeError, AttributeError) as exc:
        raise ConfigFileError(f"{path} is damaged ({exc}); remove it and log in again") from None


def save_credentials(credentials: Credentials, directory: Path | None = None) -> Path:
    path = (directory or config_dir()) / CREDENTIALS_FILE
    document = {"current": credentials.current,
                "servers": {name: asdict(login) for name, login in credentials.servers.items()}}
    _write_private(path, json.dumps(document, indent=2, sort_keys=True) + "\n")
    return path


class KnownHosts:
    """`ADDRESS SHA256:<hex>` lines; comments (#) and blank lines are kept as they are."""

    def __init__(self, directory: Path | None = None) -> None:
        self.path = (directory or config_dir()) / KNOWN_HOSTS_FILE
        self._lines = (_read(self.path) or "").splitlines()

    def get(self, address: str) -> bytes | None:
        for line in self._lines:
            parts = line.split()
            if len(parts) >= 2 and parts[0] == address and not parts[0].startswith("#"):
                return parse_fingerprint(parts[1])
        return None

    def set(self, address: str, fingerprint: bytes) -> None:
        self._drop(address)
        self._lines.append(f"{address} {format_fingerprint(fingerprint)}")
        self._save()

    def forget(self, address: str) -> bool:
        before = len(self._lines)
        self._drop(address)
        if len(self._lines) != before:
            self._save()
            return True
        return False

    def _drop(self, address: str) -> None:
        self._lines = [line for line in self._lines
                       if not (line.split() and line.split()[0] == address)]

    def _save(self) -> None:
        _write_private(self.path, "".join(f"{line}\n" for line in self._lines))


def format_fingerprint(fingerprint: bytes) -> str:
    return f"SHA256:{fingerprint.hex()}"


def parse_fingerprint(text: str) -> bytes | None:
    """`SHA256:<64 hex>` (prefix optional, `:` between bytes allowed), else None."""
    value = text.strip()
    if value.upper().startswith("SHA256:"):
        value = value[len("SHA256:"):]
    value = value.replace(":", "").lower()
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        return None
    return raw if len(raw) == 32 else None
