"""deploy/server.toml (installed as /etc/jetstream/server.toml) lists every setting,
commented out at its default, and cannot go stale: it is generated from SETTINGS."""

from __future__ import annotations

import re
from pathlib import Path

from jetstream.config import SETTINGS, load_config, render_sample_config

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "deploy" / "server.toml"


def test_sample_is_generated_from_settings():
    assert SAMPLE.read_text() == render_sample_config(), (
        "deploy/server.toml is stale: run python -c 'from jetstream.config import "
        "render_sample_config as r; print(r(), end=\"\")' > deploy/server.toml")


def test_every_setting_is_named_with_its_flag_and_variable():
    text = SAMPLE.read_text()
    for setting in SETTINGS:
        assert re.search(rf"^#( )?{setting.name}( =|: unset)", text, re.M), setting.name
        assert f"flag {setting.flag}, environment {setting.env}" in text


def test_as_shipped_and_with_every_line_uncommented_it_means_the_defaults(tmp_path):
    defaults = load_config({}, env={}, config_file=None)
    shipped = load_config({}, env={}, config_file=SAMPLE)
    uncommented = tmp_path / "server.toml"
    uncommented.write_text(re.sub(r"^#(\w+ = )", r"\1", SAMPLE.read_text(), flags=re.M))
    every = load_config({}, env={}, config_file=uncommented)
    assert shipped == defaults.__class__(**{**vars(defaults), "config_file": SAMPLE})
    assert every == defaults.__class__(**{**vars(defaults), "config_file": uncommented})
    unset = len(re.findall(r"^# \w+: unset by default$", SAMPLE.read_text(), re.M))
    assert len(re.findall(r"^\w+ = ", uncommented.read_text(), re.M)) == len(SETTINGS) - unset
