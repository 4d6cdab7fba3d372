"""The deployment files pass their validators offline, and say what the server does:

- deploy/kubernetes/: every document against the Kubernetes API schemas, strictly (no
  unknown fields: kubernetes-validate, for the oldest version with gRPC probes and the
  newest) and by type and enum (kubernetes-models, which also carries the Prometheus
  operator's ServiceMonitor schema);
- deploy/compose/: the Compose specification's schema, `promtool check config`, and a
  Grafana dashboard whose every query parses (promtool) and names metrics a real server
  exports.

The node packages come from the npm registry and promtool from Debian's prometheus
package; tests/run.sh installs both.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from jetstream.config import load_config
from tests.support.servers import ServerProcess

REPO = Path(__file__).resolve().parents[2]
KUBERNETES = REPO / "deploy" / "kubernetes" / "jetstream.yaml"
COMPOSE = REPO / "deploy" / "compose"
NODE_MODULES = REPO / ".tools" / "deploy-check" / "node_modules"
DASHBOARD = COMPOSE / "grafana" / "dashboards" / "jetstream.json"


def node_validate(mode: str, *files: Path) -> subprocess.CompletedProcess[str]:
    if not NODE_MODULES.is_dir() or shutil.which("node") is None:
        pytest.fail(f"node and {NODE_MODULES} are needed: tests/run.sh installs them")
    return subprocess.run(["node", str(REPO / "tests" / "deploy" / "validate.cjs"), mode,
                           *map(str, files)], capture_output=True, text=True, timeout=120,
                          env={"NODE_PATH": str(NODE_MODULES), "PATH": "/usr/bin:/bin"})


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        pytest.fail("promtool is needed (Debian's prometheus package): tests/run.sh installs it")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)


def documents() -> dict[str, dict]:
    return {f"{d['kind']}/{d['metadata']['name']}": d
            for d in yaml.safe_load_all(KUBERNETES.read_text()) if d}


def test_kubernetes_manifests_pass_the_schemas(tmp_path):
    models = node_validate("kubernetes", KUBERNETES)
    assert models.returncode == 0, models.stdout + models.stderr
    assert "6 kubernetes document(s) valid" in models.stdout
    for version in ("1.27", "1.37"):  # gRPC probes are GA from 1.27
        strict = subprocess.run(
            [str(Path(sys.executable).with_name("kubernetes-validate")), "--strict",
             "--no-warn", "-k", version, str(KUBERNETES)],
            capture_output=True, text=True, timeout=120)
        assert strict.returncode == 0, strict.stdout + strict.stderr
        assert strict.stdout.count("passed for resource") == 5, strict.stdout


def test_the_validators_catch_mistakes(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text(KUBERNETES.read_text().replace("protocol: UDP}", "protocol: UPD}", 1)
                      .replace("port: metrics", "port: 9886"))
    found = node_validate("kubernetes", broken)
    assert found.returncode == 1
    assert "Service/jetstream: data/spec/ports/1/protocol" in found.stdout
    assert "ServiceMonitor/jetstream" in found.stdout
    typo = tmp_path / "typo.yaml"
    typo.write_text(KUBERNETES.read_text().replace("periodSeconds: 5", "periodSecond: 5"))
    strict = subprocess.run([str(Path(sys.executable).with_name("kubernetes-validate")),
                             "--strict", "--no-warn", str(typo)],
                            capture_output=True, text=True, timeout=120)
    assert strict.returncode != 0 and "'periodSecond' was unexpected" in strict.stdout
    compose = tmp_path / "compose.yaml"
    compose.write_text((COMPOSE / "compose.yaml").read_text().replace("interval: 30s",
                                                                      "interval: 30 seconds"))
    found = node_validate("compose", compose)
    assert found.returncode == 1 and "/services/relay/healthcheck/interval" in found.stdout


def test_kubernetes_servers_keep_state_and_answer_on_tcp_and_udp_8886(tmp_path):
    docs = documents()
    config = tmp_path / "server.toml"
    config.write_text(docs["ConfigMap/jetstream-config"]["data"]["server.toml"])
    settings = load_config({}, env={}, config_file=config)  # a valid configuration
    sts = docs["StatefulSet/jetstream"]["spec"]
    pod = sts["template"]["spec"]["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in pod["volumeMounts"]}
    assert mounts["state"] == str(settings.persistent_state_dir)
    assert "state" in [c["metadata"]["name"] for c in sts["volumeClaimTemplates"]]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert pod[probe]["grpc"]["port"] == settings.health_port != 0
    for replica in range(sts["replicas"]):
        ports = {(p["port"], p["protocol"])
                 for p in docs[f"Service/jetstream-{replica}"]["spec"]["ports"]}
        assert ports == {(8886, "TCP"), (8886, "UDP")}
    monitor = docs["ServiceMonitor/jetstream"]["spec"]
    headless = docs["Service/jetstream"]
    assert monitor["selector"]["matchLabels"].items() <= headless["metadata"]["labels"].items()
    metrics = [p for p in headless["spec"]["ports"] if p["name"] == monitor["endpoints"][0]["port"]]
    assert metrics and metrics[0]["port"] == settings.metrics_port
    assert settings.metrics_host == "0.0.0.0"


def test_compose_file_passes_the_compose_schema():
    checked = node_validate("compose", COMPOSE / "compose.yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_compose_has_two_servers_a_relay_prometheus_and_grafana():
    services = yaml.safe_load((COMPOSE / "compose.yaml").read_text())["services"]
    assert set(services) == {"server-a", "server-b", "relay", "prometheus", "grafana"}
    assert services["relay"]["command"][:3] == ["relay_server", "--control-port", "8887"]
    scraped = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    targets = scraped["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["server-a:9886", "server-b:9886"]
    for name in ("server-a", "server-b"):
        assert "0.0.0.0" in services[name]["command"]  # metrics reachable by Prometheus
    for volume in services["grafana"]["volumes"] + services["prometheus"]["volumes"]:
        source = volume.split(":")[0]
        if source.startswith("./"):
            assert (COMPOSE / source).exists(), source


def test_prometheus_config_passes_promtool():
    checked = promtool("check", "config", str(COMPOSE / "prometheus.yml"))
    assert checked.returncode == 0 and "SUCCESS" in checked.stdout, checked.stdout + checked.stderr


def exported_metric_names(tmp_path: Path) -> set[str]:
    server = ServerProcess(tmp_path / "state", ["--api-port", "0", "--recv-port", "0",
                                                "--metrics-port", "0", "--api-socket", ""],
                           tmp_path / "server.log").start()
    try:
        body = urllib.request.urlopen(f"http://{server.metrics}/metrics", timeout=10).read()
    finally:
        server.stop()
    # Sample names, and families (a gauge with nothing to count yet has only its TYPE line).
    return {m[1] or m[2] for m in re.finditer(r"^(?:(\w+)[{ ]|# TYPE (\w+) )", body.decode(),
                                              re.M)}


def test_dashboard_queries_parse_and_name_exported_metrics(tmp_path):
    dashboard = json.loads(DASHBOARD.read_text())
    source = yaml.safe_load((COMPOSE / "grafana" / "provisioning" / "datasources" /
                             "prometheus.yaml").read_text())["datasources"][0]
    exprs = []
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == source["uid"] and panel["targets"], panel["title"]
        exprs += [t["expr"] for t in panel["targets"]]
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("rate", "round-trip", "loss", "by state", "bytes"):
        assert topic in titles, topic

    # promtool parses PromQL through a rules file; Grafana's range variables become 5m.
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:panel_{i}", "expr": re.sub(r"\$__\w+", "5m", expr)}
        for i, expr in enumerate(exprs)]}]}
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    parsed = promtool("check", "rules", str(tmp_path / "rules.yml"))
    assert parsed.returncode == 0, parsed.stdout + parsed.stderr

    exported = exported_metric_names(tmp_path)
    named = {n for expr in exprs for n in re.findall(r"\b(jetstream_\w+)", expr)}
    assert named and named <= exported, named - exported
