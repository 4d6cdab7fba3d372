"""Who a logged-in user is, as the operating system knows them.

A `Principal` is built once per login from the user database (passwd, group and whatever
NSS adds, e.g. sssd), so that later decisions (sandbox placeholders, the credentials file
access runs with, superuser checks) use the same frozen answer instead of asking again.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass

from jetstream.errors import NotFound


@dataclass(frozen=True)
class Principal:
    username: str
    """Canonical login name from the user database (`pw_name`), e.g. `alice` or `alice@corp`."""
    uid: int
    gid: int
    """Primary group: the group of every file this user creates."""
    groups: tuple[int, ...]
    """Every group the user is in (`getgrouplist`, primary included), as a login would set."""
    home: str
    full_name: str
    """First GECOS field, e.g. `Alice Example`; informational only."""
    domain: str = ""
    """The part after `@` in `user@domain` names (placeholder `%d`); empty for local users."""
    is_superuser: bool = False
    """Decided by the server's --superuser/--supergroup policy, not by this module."""

    @property
    def short_name(self) -> str:
        """The login name without `@domain` (placeholder `%u`)."""
        return self.username.rpartition("@")[0] if self.domain else self.username


def lookup_principal(username: str) -> Principal:
    """Read `username` from the user database; NotFound if it does not exist.

    Blocks on NSS (LDAP, sssd): call it from a worker thread, never the event loop.
    """
    try:
        entry = pwd.getpwnam(username)
    except KeyError:
        raise NotFound(f"no such user: {username!r}") from None
    name = entry.pw_name
    _, at, domain = name.rpartition("@")
    return Principal(
        username=name,
        uid=entry.pw_uid,
        gid=entry.pw_gid,
        groups=tuple(dict.fromkeys(os.getgrouplist(name, entry.pw_gid))),
        home=entry.pw_dir,
        full_name=entry.pw_gecos.split(",", 1)[0],
        domain=domain if at else "",
    )
