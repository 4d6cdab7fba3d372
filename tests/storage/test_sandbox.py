"""Sandbox mappings and placeholders (pure; no root needed)."""

from __future__ import annotations

import pytest

from jetstream.auth.principal import Principal
from jetstream.errors import ConfigError, NotFound, PermissionDenied
from jetstream.storage.paths import parse_path
from jetstream.storage.sandbox import (
    UNCONFINED,
    SandboxRoot,
    SandboxRules,
    check_template,
    expand_mapping,
    expand_template,
)


def person(username: str = "alice", domain: str = "") -> Principal:
    return Principal(username, 1000, 1000, (1000,), f"/home/{username}", "Alice Example", domain)


ALICE = person()
CORP_ALICE = person("alice@corp.example", "corp.example")


@pytest.mark.parametrize(
    ("template", "principal", "expanded"),
    [
        ("/storage/%u", ALICE, "/storage/alice"),
        ("/storage/%d/%u", ALICE, "/storage/alice"),
        ("/storage/%d/%u", CORP_ALICE, "/storage/corp.example/alice"),
        ("/storage/%f", CORP_ALICE, "/storage/alice@corp.example"),
        ("/data/100%%/%u", ALICE, "/data/100%/alice"),
        ("/data/%%u", ALICE, "/data/%u"),
        ("/data//./x/", ALICE, "/data/x"),
        ("/", ALICE, "/"),
    ],
)
def test_expand_template(template, principal, expanded):
    assert expand_template(template, principal) == expanded


@pytest.mark.parametrize(
    "template", ["storage/%u", "/a/%x", "/a/%", "/a/../b", "/a/%U", "/a\0b", ""]
)
def test_bad_templates_are_config_errors(template):
    with pytest.raises(ConfigError):
        check_template(template)


@pytest.mark.parametrize(
    "principal",
    [person("evil@..", ".."), person("x@.", "."), person("@corp", "corp"), person("a/b")],
)
def test_account_names_that_are_not_file_names_get_no_sandbox(principal):
    with pytest.raises(PermissionDenied):
        expand_template("/storage/%d/%u", principal)


def test_expand_mapping_keeps_order():
    mapping = {"": "/home/%u", "common": "/srv/common"}
    assert list(expand_mapping(mapping, ALICE).items()) == [
        ("", "/home/alice"),
        ("common", "/srv/common"),
    ]


def test_no_rules_means_unconfined():
    sandbox = SandboxRules().sandbox_for(ALICE)
    assert sandbox == UNCONFINED
    assert not sandbox.root().confined
    location = sandbox.locate(parse_path("", empty_is_root=True), parse_path("file.txt"))
    assert location.root.path == "/" and str(location) == "/file.txt"


def test_system_dirs_then_all_users_then_per_user():
    rules = SandboxRules(
        sandbox_dirs=("/data/%u", "/shared"),
        all_users={"scratch": "/scratch/%u"},
        users={"bob": {"": "/special/bob", "projects": "/projects"}},
    )
    alice = rules.sandbox_for(ALICE)
    assert [(r.name, r.path) for r in alice.roots] == [
        ("", "/data/alice"),
        ("/shared", "/shared"),
        ("scratch", "/scratch/alice"),
    ]
    bob = rules.sandbox_for(person("bob"))
    assert bob.root() == SandboxRoot("", "/special/bob")
    assert bob.root("projects").path == "/projects"
    assert [r.name for r in bob.roots] == ["", "/shared", "scratch", "projects"]


def test_default_root_is_the_unnamed_mount_else_the_first():
    rules = SandboxRules(users={"alice": {"work": "/work/%u", "": "/home/%u"}})
    assert rules.sandbox_for(ALICE).root().path == "/home/alice"
    rules = SandboxRules(users={"alice": {"work": "/work/%u", "home": "/home/%u"}})
    assert rules.sandbox_for(ALICE).root().path == "/work/alice"


def test_unknown_root_name():
    sandbox = SandboxRules(sandbox_dirs=("/data",)).sandbox_for(ALICE)
    with pytest.raises(NotFound):
        sandbox.root("nope")


def test_locate_follows_the_product_rule():
    sandbox = SandboxRules(sandbox_dirs=("/storage/%u",)).sandbox_for(ALICE)
    location = sandbox.locate(parse_path("/repository1"), parse_path("/mnt/data/file.txt"))
    assert location.root.path == "/storage/alice"
    assert str(location) == "/repository1/mnt/data/file.txt"


def test_check_reports_any_bad_template():
    SandboxRules(sandbox_dirs=("/data/%u",), users={"bob": {"": "/b/%d"}}).check()
    with pytest.raises(ConfigError):
        SandboxRules(users={"bob": {"": "relative/%u"}}).check()
