"""Principal lookup from the user database (faked here; the real one is in test_pam_login)."""

from __future__ import annotations

import os
import pwd

from jetstream.auth.principal import Principal, lookup_principal


def test_directory_user_with_a_domain(monkeypatch):
    entry = pwd.struct_passwd(
        ("alice@corp.example", "*", 5000, 5000, "Alice Example,Room 1,,", "/home/alice", "/bin/sh")
    )
    monkeypatch.setattr(pwd, "getpwnam", lambda name: entry)
    monkeypatch.setattr(os, "getgrouplist", lambda name, gid: [gid, 27, gid])
    principal = lookup_principal("ALICE@corp.example")
    assert principal == Principal(
        username="alice@corp.example",
        uid=5000,
        gid=5000,
        groups=(5000, 27),
        home="/home/alice",
        full_name="Alice Example",
        domain="corp.example",
    )
    assert principal.short_name == "alice"


def test_local_user_has_no_domain():
    principal = lookup_principal("root")
    assert (principal.uid, principal.domain, principal.short_name) == (0, "", "root")
