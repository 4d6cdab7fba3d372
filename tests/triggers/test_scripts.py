"""Which trigger scripts may run: the rule of jetstream.triggers.scripts on real files."""

from __future__ import annotations

import os
from pathlib import Path

from jetstream.triggers import catalog
from jetstream.triggers.scripts import check, find_scripts
from tests.system.users import require_root
from tests.triggers.helpers import install, make_trigger_dir

SCRIPT = "#!/bin/sh\nexit 0\n"


def test_scripts_are_found_by_event_and_vetted(tmp_path):
    require_root()
    base = make_trigger_dir(tmp_path / "triggers")
    install(base / "launch", SCRIPT)
    install(base / "recv.fileComplete" / "b-second", SCRIPT)
    install(base / "recv.fileComplete" / "a-first", SCRIPT)
    install(base / "recv.fileComplete" / ".disabled", SCRIPT)
    install(base / "shutdown~", SCRIPT)
    install(base / "auth.login", SCRIPT, mode=0o777)
    install(base / "auth.loginFailed", SCRIPT, mode=0o644)
    install(base / "sandbox.mappingSet", SCRIPT)
    os.chown(base / "sandbox.mappingSet", 65534, 65534)
    (base / "send.transferComplete").symlink_to(base / "launch")

    found = {(s.event, s.path.name): s.problem for s in find_scripts(base)}
    assert set(found) == {("launch", "launch"), ("recv.fileComplete", "a-first"),
                          ("recv.fileComplete", "b-second"), ("auth.login", "auth.login"),
                          ("auth.loginFailed", "auth.loginFailed"),
                          ("sandbox.mappingSet", "sandbox.mappingSet"),
                          ("send.transferComplete", "send.transferComplete")}
    assert found[("launch", "launch")] == ""
    assert found[("recv.fileComplete", "a-first")] == ""
    assert "writable by group and others (mode 0777); run chmod go-w" in \
        found[("auth.login", "auth.login")]
    assert "not executable; run chmod u+x" in found[("auth.loginFailed", "auth.loginFailed")]
    assert "not by root" in found[("sandbox.mappingSet", "sandbox.mappingSet")]
    assert "symbolic link" in found[("send.transferComplete", "send.transferComplete")]
    order = [s.path.name for s in find_scripts(base) if s.event == "recv.fileComplete"]
    assert order == ["a-first", "b-second"]


def test_a_writable_directory_refuses_every_script_in_it(tmp_path):
    require_root()
    base = make_trigger_dir(tmp_path / "triggers")
    script = install(base / "recv.fileComplete" / "notify", SCRIPT)
    assert [s.problem for s in find_scripts(base)] == [""]
    (base / "recv.fileComplete").chmod(0o775)
    [found] = find_scripts(base)
    assert "the directory" in found.problem and "writable by its group" in found.problem
    assert check(found, base) == found.problem
    (base / "recv.fileComplete").chmod(0o755)
    base.chmod(0o757)
    assert "writable by others" in check(found, base)
    base.chmod(0o755)
    tmp_path.chmod(0o777)  # a directory above, without the sticky bit
    try:
        assert "writable by group and others" in check(found, base)
    finally:
        tmp_path.chmod(0o755)
    assert check(found, base) == "" and script.exists()


def test_environment_names_and_arguments_follow_the_catalog():
    assert catalog.environment_name("transferId") == "JETSTREAM_TRANSFER_ID"
    assert catalog.environment_name("apiPort") == "JETSTREAM_API_PORT"
    assert catalog.environment_name("localPath") == "JETSTREAM_LOCAL_PATH"
    names = [t.name for t in catalog.EVENT_TYPES]
    assert len(names) == len(set(names))
    assert not any(name.startswith(catalog.RUN_PREFIX) for name in names)


def test_docs_describe_every_event_with_its_arguments():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "triggers.md").read_text()
    for event in catalog.EVENT_TYPES:
        row = next((line for line in doc.splitlines() if line.startswith(f"| `{event.name}` |")),
                   None)
        assert row is not None, f"docs/triggers.md has no row for {event.name}"
        arguments = row.split("|")[3]
        positions = [arguments.find(name) for name in event.arguments]
        assert -1 not in positions and positions == sorted(positions), (event.name, row)
