"""Configuration: precedence, validation messages, and the generated documentation."""

from __future__ import annotations

from pathlib import Path

import pytest

from jetstream.config import load_config, load_relay_config, render_configuration_doc
from jetstream.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_defaults_match_the_primer():
    config = load_config({}, env={}, config_file=None)
    assert config.api_port == 8886
    assert config.recv_port == (8886,)
    assert config.persistent_state_dir == Path("/var/lib/jetstream/state")
    assert config.trigger_dir == Path("/var/lib/jetstream/triggers")
    assert config.api_allow_remote_control is False
    assert config.api_bind_host == "127.0.0.1"
    assert config.metrics_host == "127.0.0.1" and config.metrics_port == 9886


def test_precedence_flags_over_env_over_file(tmp_path):
    file = tmp_path / "server.toml"
    file.write_text("[server]\napi_port = 1001\nmetrics_port = 1002\nrecv_port = [1003, 1004]\n")
    env = {"JETSTREAM_API_PORT": "2001", "JETSTREAM_RECV_PORT": "2003,2004"}
    config = load_config({"api_port": "3001"}, env=env, config_file=file)
    assert config.api_port == 3001
    assert config.recv_port == (2003, 2004)
    assert config.metrics_port == 1002


def test_config_file_from_environment(tmp_path):
    file = tmp_path / "c.toml"
    file.write_text("disable_telemetry = true\n")
    config = load_config({}, env={"JETSTREAM_CONFIG": str(file)})
    assert config.disable_telemetry is True
    assert config.config_file == file


def test_remote_control_binds_everywhere():
    config = load_config({"api_allow_remote_control": True}, env={}, config_file=None)
    assert config.api_bind_host == "[::]"
    config = load_config({"api_host": "10.1.2.3"}, env={}, config_file=None)
    assert config.api_bind_host == "127.0.0.1", "off means loopback only, whatever the host"


@pytest.mark.parametrize(
    ("flags", "env", "needle"),
    [
        ({"api_port": "70000"}, {}, "--api-port: must be a port number"),
        ({"api_port": "abc"}, {}, "--api-port: must be a whole number"),
        ({}, {"JETSTREAM_METRICS_PORT": "-1"}, "JETSTREAM_METRICS_PORT: must be a port"),
        ({"persistent_state_dir": "relative/dir"}, {}, "--persistent-state-dir: must be an "
         "absolute path"),
        ({}, {"JETSTREAM_DISABLE_TELEMETRY": "maybe"}, "JETSTREAM_DISABLE_TELEMETRY: must be "
         "true or false"),
        ({"shutdown_grace": "0"}, {}, "--shutdown-grace: must be greater than 0"),
        ({"recv_host": "example"}, {}, "--recv-host: is not an IP address"),
    ],
)
def test_invalid_values_name_the_setting(flags, env, needle):
    with pytest.raises(ConfigError) as info:
        load_config(flags, env=env, config_file=None)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_config_files(tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text("api_port = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config({}, env={}, config_file=broken)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("api_prot = 1\n")
    with pytest.raises(ConfigError, match="unknown setting 'api_prot'"):
        load_config({}, env={}, config_file=unknown)
    with pytest.raises(ConfigError, match="config file .*missing"):
        load_config({}, env={}, config_file=tmp_path / "missing.toml")


def test_configuration_doc_is_generated_from_settings():
    doc = (REPO / "docs" / "configuration.md").read_text()
    assert doc == render_configuration_doc(), (
        "docs/configuration.md is stale: run "
        "python -c 'from jetstream.config import render_configuration_doc as r; "
        "print(r(), end=\"\")' > docs/configuration.md"
    )


FINGERPRINT = "ab" * 32


def test_relay_settings_have_their_own_variables_and_table(tmp_path):
    file = tmp_path / "relay.toml"
    file.write_text("[relay]\ncontrol_port = 9001\nrecv_port = [9002, 9003]\n"
                    f'trust_server = ["SHA256:{FINGERPRINT.upper()}"]\n')
    env = {"JETSTREAM_RELAY_QUEUE_LIMIT": "512k", "JETSTREAM_API_PORT": "1"}
    config = load_relay_config({"metrics_port": "9004"}, env=env, config_file=file)
    assert (config.control_port, config.recv_port, config.metrics_port) == (9001, (9002, 9003),
                                                                            9004)
    assert config.trust_server == (FINGERPRINT,), "normalised: lower case, no prefix"
    assert config.queue_limit == 512 << 10
    defaults = load_relay_config({}, env={}, config_file=None)
    assert (defaults.control_port, defaults.recv_port, defaults.metrics_port) == (8887, (8886,),
                                                                                  9887)


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        ({"trust_server": ["abc"]}, "--trust-server: must be a SHA-256 fingerprint"),
        ({"queue_limit": "lots"}, "--queue-limit: must be a size in bytes"),
        ({"recv_port": ["8886", "8886"]}, "--recv-port: a port is listed twice"),
    ],
)
def test_bad_relay_settings_name_the_setting(flags, needle):
    with pytest.raises(ConfigError, match=needle):
        load_relay_config(flags, env={}, config_file=None)


def test_a_relay_needs_its_fingerprint_and_a_tls_api():
    relay = {"recv_relay_host": "dmz.example.org"}
    with pytest.raises(ConfigError, match="needs --recv-relay-fingerprint"):
        load_config(relay, env={}, config_file=None)
    with pytest.raises(ConfigError, match="drop --api-plaintext"):
        load_config({**relay, "recv_relay_fingerprint": FINGERPRINT, "api_plaintext": True},
                    env={}, config_file=None)
    config = load_config({**relay, "recv_relay_fingerprint": f"sha256:{FINGERPRINT}"}, env={},
                         config_file=None)
    assert (config.recv_relay_port, config.recv_relay_fingerprint) == (8887, FINGERPRINT)
