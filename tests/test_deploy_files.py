"""deploy/ as shipped: every YAML parses, every gateway config in it loads through the real config
parser, and the manifests agree with the image and the app (probe paths it serves, the user it
runs as, stop grace longer than the server's, secrets and volumes that exist)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from proxy.app import create_app
from proxy.config.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
PROVIDER_KEYS = {"OPENAI_API_KEY": "sk-test-openai-0000", "ANTHROPIC_API_KEY": "sk-test-anthropic-0000"}


def documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def manifest(name: str) -> dict[str, Any]:
    (doc,) = documents(KUBERNETES / name)
    assert isinstance(doc, dict)
    return doc


def container() -> dict[str, Any]:
    (found,) = manifest("deployment.yaml")["spec"]["template"]["spec"]["containers"]
    assert isinstance(found, dict)
    return found


def configmap_config(tmp_path: Path) -> Path:
    path = tmp_path / "ctxgate.yaml"
    path.write_text(manifest("configmap.yaml")["data"]["ctxgate.yaml"], encoding="utf-8")
    return path


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)s", value)
    assert match, f"not a duration in seconds: {value!r}"
    return float(match.group(1))


@pytest.mark.parametrize("path", sorted(DEPLOY.rglob("*.yaml")) + sorted(DEPLOY.rglob("*.yml")),
                         ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_deploy_yaml_parses(path: Path) -> None:
    assert documents(path)


@pytest.mark.parametrize("name", ["team.yaml", "ctxgate.yaml"])
def test_deploy_gateway_configs_load(name: str) -> None:
    settings = load_settings(str(DEPLOY / name), environ=PROVIDER_KEYS)
    assert settings.models


def test_team_config_is_a_team_config(tmp_path: Path) -> None:
    for path in (DEPLOY / "team.yaml", configmap_config(tmp_path)):
        settings = load_settings(str(path), environ=PROVIDER_KEYS)
        assert settings.store_url.startswith("postgresql://")
        assert urlsplit(settings.store_url).password is None, "no password in the config: CTXGATE_DB brings it"
        assert settings.spool_dir == "/spool"
        assert settings.workers == 1
        assert len(settings.models) == 2
        assert all(key.rpm and key.projects for key in settings.keys)
        assert settings.policy.enforcing


def test_configmap_is_team_yaml_but_for_the_database_host(tmp_path: Path) -> None:
    team = load_settings(str(DEPLOY / "team.yaml"), environ=PROVIDER_KEYS)
    cluster = load_settings(str(configmap_config(tmp_path)), environ=PROVIDER_KEYS)
    differing = {name for name in Settings.__slots__ if getattr(team, name) != getattr(cluster, name)}
    assert differing == {"store_url"}


def test_ctxgate_db_from_the_environment_wins_over_store_url() -> None:
    url = "postgresql://ctxgate:secret@postgres:5432/ctxgate"
    settings = load_settings(str(DEPLOY / "team.yaml"), environ={**PROVIDER_KEYS, "CTXGATE_DB": url})
    assert settings.store_url == url


async def test_probe_paths_are_served(aiohttp_client: Any, tmp_path: Path) -> None:
    spec = container()
    paths = {spec[probe]["httpGet"]["path"] for probe in ("readinessProbe", "livenessProbe", "startupProbe")}
    assert paths == {"/readyz", "/livez"}
    client = await aiohttp_client(create_app(Settings(store_url=str(tmp_path / "ctxgate.db"))))
    for path in sorted(paths | {"/healthz"}):
        response = await client.get(path)
        assert response.status == 200, path


def test_deployment_runs_as_the_image_user_read_only() -> None:
    pod = manifest("deployment.yaml")["spec"]["template"]["spec"]
    user = re.search(r"^USER (\d+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert user is not None
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(user.group(1)) == 10001
    assert container()["securityContext"]["readOnlyRootFilesystem"] is True
    assert manifest("deployment.yaml")["spec"]["replicas"] == 2


def test_deployment_mounts_the_config_and_the_spool(tmp_path: Path) -> None:
    settings = load_settings(str(configmap_config(tmp_path)), environ=PROVIDER_KEYS)
    spec = container()
    mounts = {mount["mountPath"]: mount["name"] for mount in spec["volumeMounts"]}
    config_flag = spec["args"][spec["args"].index("--config") + 1]
    assert mounts[str(Path(config_flag).parent)] == "config"
    assert settings.spool_dir in mounts
    volumes = {volume["name"]: volume for volume in manifest("deployment.yaml")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == manifest("configmap.yaml")["metadata"]["name"]
    assert "emptyDir" in volumes[mounts[settings.spool_dir]]


def test_deployment_secrets_exist_in_the_example_secret() -> None:
    secret = manifest("secret.example.yaml")
    env = {item["name"]: item["valueFrom"]["secretKeyRef"] for item in container()["env"]}
    assert "CTXGATE_DB" in env
    for name, ref in env.items():
        assert ref["name"] == secret["metadata"]["name"]
        assert ref["key"] in secret["stringData"], name
    assert secret["stringData"]["CTXGATE_DB"].startswith("postgresql://")
    for name in PROVIDER_KEYS:
        assert name in env


def test_stop_grace_outlasts_the_server_shutdown_timeout(tmp_path: Path) -> None:
    cluster = load_settings(str(configmap_config(tmp_path)), environ=PROVIDER_KEYS)
    grace = manifest("deployment.yaml")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > cluster.shutdown_timeout_s
    team = load_settings(str(DEPLOY / "team.yaml"), environ=PROVIDER_KEYS)
    (compose,) = documents(DEPLOY / "docker-compose.yml")
    for name in ("ctxgate-a", "ctxgate-b"):
        assert seconds(compose["services"][name]["stop_grace_period"]) > team.shutdown_timeout_s


def test_compose_runs_two_gateways_on_postgres_behind_the_balancer() -> None:
    team = load_settings(str(DEPLOY / "team.yaml"), environ=PROVIDER_KEYS)
    (compose,) = documents(DEPLOY / "docker-compose.yml")
    services = compose["services"]
    assert services["postgres"]["image"].startswith("postgres:16")
    spools = set()
    for name in ("ctxgate-a", "ctxgate-b"):
        service = services[name]
        assert service["environment"]["CTXGATE_DB"].startswith("postgresql://ctxgate:")
        mounts = dict(volume.split(":")[:2][::-1] for volume in service["volumes"])
        spools.add(mounts[team.spool_dir])
        assert "./team.yaml" in mounts.values()
    assert len(spools) == 2, "each gateway has a spool of its own"
    balancer = (DEPLOY / "haproxy.cfg").read_text()
    assert "balance roundrobin" in balancer
    assert "uri /healthz" in balancer
    for name in ("ctxgate-a", "ctxgate-b"):
        assert re.search(rf"^\s*server {name} {name}:8080", balancer, re.MULTILINE)
