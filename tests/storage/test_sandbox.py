"""Sandbox mappings and placeholders (pure; no root needed)."""

from __future__ import annotations

import pytest

from jetstream.auth.principal import Principal
from jetstream.errors import ConfigError, NotFound, PermissionDenied
from jetstream.storage.paths import parse_path
from jetstream.storage.sandbox import (
    UNCONFINED,
    Location,
    Resource,
    Sandbox,
    SandboxRoot,
    SandboxRules,
    check_resources,
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


def test_sandbox_dirs_are_the_all_users_mapping_and_per_user_replaces_it():
    rules = SandboxRules(
        sandbox_dirs=("/data/%u", "/srv/shared"),
        all_users=(Resource("scratch", "/scratch/%u"),),  # shadowed by --sandbox-dir
        users={"bob": (Resource("", "/special/bob"),)},
    )
    alice = rules.sandbox_for(ALICE)
    assert [(r.name, r.path) for r in alice.roots] == [
        ("", "/data/alice"),
        ("srv/shared", "/srv/shared"),
    ]
    bob = rules.sandbox_for(person("bob"))
    assert bob.roots == (SandboxRoot("", "/special/bob"),)
    assert [r.mount for r in rules.fixed_resources()] == ["", "srv/shared"]


def test_stored_all_users_mapping_applies_without_sandbox_dirs():
    rules = SandboxRules(
        all_users=(Resource("home", "/home/%u", create=True),
                   Resource("shared", "/srv/shared", read_only=True)),
    )
    alice = rules.sandbox_for(ALICE)
    assert alice.roots == (
        SandboxRoot("home", "/home/alice", create=True),
        SandboxRoot("shared", "/srv/shared", read_only=True),
    )
    assert alice.root().path == "/home/alice"  # no "" mount: the first


def test_unknown_root_name():
    sandbox = SandboxRules(sandbox_dirs=("/data",)).sandbox_for(ALICE)
    with pytest.raises(NotFound):
        sandbox.root("nope")


def test_locate_follows_the_product_rule():
    sandbox = SandboxRules(sandbox_dirs=("/storage/%u",)).sandbox_for(ALICE)
    location = sandbox.locate(parse_path("/repository1"), parse_path("/mnt/data/file.txt"))
    assert location.root.path == "/storage/alice"
    assert str(location) == "/repository1/mnt/data/file.txt"


def test_check_reports_any_bad_template_or_mapping():
    SandboxRules(sandbox_dirs=("/data/%u",), users={"bob": (Resource("", "/b/%d"),)}).check()
    with pytest.raises(ConfigError):
        SandboxRules(users={"bob": (Resource("", "relative/%u"),)}).check()
    with pytest.raises(ConfigError, match="first --sandbox-dir"):
        SandboxRules(sandbox_dirs=("/data", "/")).check()


@pytest.mark.parametrize(
    ("resources", "problem"),
    [
        ((), "at least one"),
        ((Resource("", "/a"), Resource("b", "/b")), "only resource"),
        ((Resource("a/b", "/a"),), "must not contain '/'"),
        ((Resource("..", "/a"),), "not allowed"),
        ((Resource("x", "/a"), Resource("x", "/b")), "share the mount name"),
        ((Resource("x", "/a/%q"),), "unknown placeholder"),
        ((Resource("x", "a"),), "absolute"),
    ],
)
def test_check_resources_refuses(resources, problem):
    with pytest.raises(ConfigError, match=problem):
        check_resources(resources)


def view(*roots: SandboxRoot) -> Sandbox:
    return Sandbox(roots)


def test_resolve_named_mounts_without_a_view_root():
    box = view(SandboxRoot("home", "/h/alice"), SandboxRoot("shared", "/srv/shared"))
    top = box.resolve(parse_path("/"))
    assert top.location is None and top.mounts_below == ("home", "shared")
    assert top.is_mount_point
    inside = box.resolve(parse_path("/shared/a/b"))
    assert inside.location == Location(box.roots[1], parse_path("a/b"))
    assert not inside.is_mount_point
    assert box.resolve(parse_path("/home")).is_mount_point
    with pytest.raises(NotFound):
        box.resolve(parse_path("/elsewhere/x"))
    assert box.view_path(inside.location) == parse_path("/shared/a/b")


def test_resolve_view_root_with_nested_mounts():
    box = view(SandboxRoot("", "/data/alice"), SandboxRoot("srv/shared", "/srv/shared"),
               SandboxRoot("srv/shared/deep", "/deep"))
    top = box.resolve(parse_path("/"))
    assert top.location == Location(box.roots[0], parse_path("", empty_is_root=True))
    assert top.mounts_below == ("srv",)
    srv = box.resolve(parse_path("/srv"))
    assert srv.location is not None and srv.location.root.name == ""
    assert srv.mounts_below == ("shared",) and srv.is_mount_point
    deep = box.resolve(parse_path("/srv/shared/deep/x"))
    assert deep.location == Location(box.roots[2], parse_path("x"))
    plain = box.resolve(parse_path("/docs/a.txt"))
    assert plain.location == Location(box.roots[0], parse_path("docs/a.txt"))
    assert not plain.is_mount_point


def caller_view(allowed: tuple[str, ...] = (), read_only: bool = False,
                sandbox: Sandbox | None = None):
    from jetstream.auth.sessions import TokenKind, TokenRecord
    from jetstream.services.auth import Caller
    from jetstream.services.sandboxes import Sandboxes

    token = TokenRecord("t", "alice", TokenKind.API, "", allowed, read_only, 0.0, 1.0)
    view = Sandboxes(SandboxRules()).view_for(Caller(token, "test", ALICE))
    if sandbox is not None:
        from dataclasses import replace

        view = replace(view, sandbox=sandbox)
    return view


def test_allowed_paths_match_whole_components_and_read_only_refuses_writes():
    view = caller_view(("/proj", "/data/in/"))
    for ok in ("/proj", "/proj/a/b", "proj/x", "/data/in", "/data/in/f"):
        view.resolve(ok, write=True)
    for refused in ("/", "/projects", "/pro", "/data", "/data/inbox"):
        with pytest.raises(PermissionDenied, match="outside the paths"):
            view.resolve(refused, write=False)
    read_only = caller_view(read_only=True)
    assert read_only.locate("/etc", write=False).path == parse_path("/etc")
    with pytest.raises(PermissionDenied, match="read-only"):
        read_only.resolve("/tmp/x", write=True)


def test_unusable_allowed_paths_allow_nothing():
    view = caller_view(("../escape", "a//b"))
    assert view.restricted and view.allowed == ()
    with pytest.raises(PermissionDenied):
        view.resolve("/", write=False)


def test_view_refusals_for_mount_only_directories_and_read_only_resources():
    box = Sandbox((SandboxRoot("home", "/h/alice"), SandboxRoot("ro", "/srv", read_only=True)))
    view = caller_view(sandbox=box)
    from jetstream.errors import FailedPrecondition

    with pytest.raises(FailedPrecondition, match="only holds"):
        view.locate("/", write=False)
    with pytest.raises(PermissionDenied, match="only holds"):
        view.locate("/", write=True)
    with pytest.raises(PermissionDenied, match="read-only resource"):
        view.locate("/ro/x", write=True)
    assert view.locate("/ro/x", write=False) == Location(box.roots[1], parse_path("x"))
    with pytest.raises(NotFound):
        view.locate("/nope", write=False)
    with pytest.raises(PermissionDenied, match="not in your sandbox"):
        view.locate("/nope", write=True)


@pytest.mark.parametrize(("target", "expected"), [
    ("b.txt", "/in/b.txt"),
    ("../x/./y", "/x/y"),
    ("/data/alice/shared/z", "/shared/z"),   # absolute: the longest root that holds it
    ("/data/alice/in", "/in"),
    ("../../etc/passwd", None),              # climbs above the root
    ("/etc/passwd", None),                   # absolute, outside every root
    ("/data/alicex", None),                  # a prefix of a name is not a parent
    ("bad\x01name", None),                   # not a path a root could hold
])
def test_link_targets_resolve_lexically_within_the_roots(target, expected):
    sandbox = Sandbox((SandboxRoot("", "/data/alice"),
                       SandboxRoot("shared", "/data/alice/shared")))
    link = sandbox.locate(parse_path("/in/link"))
    if expected is None:
        with pytest.raises(PermissionDenied, match="/in/link: the symbolic link leads outside"):
            sandbox.link_target(link, target)
    else:
        assert str(sandbox.link_target(link, target)) == expected
