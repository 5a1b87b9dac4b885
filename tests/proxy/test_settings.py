"""Config is parsed once, strictly: errors name the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config.settings import ConfigError, load_settings

FULL = """
server: {host: 0.0.0.0, port: 9090, max_body_mb: 2}
store: {url: sqlite:///data/ctxgate.db}
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: https://example.internal/v1
      api_key: os.environ/TEST_OPENAI_KEY
      timeout: 30
default_project: atmos
context: {enabled: true, budget_tokens: 1500}
policy:
  default: {mode: allow, allowed_tools: [], restricted_tools: [], blocked_tools: [], yolo_mode: false, approval_timeout_s: 120}
  projects: {atmos: {mode: prompt, blocked_tools: [atmos_terraform_destroy]}}
keys: []
logging: {level: info, format: json}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ctxgate.yaml"
    path.write_text(text)
    return path


def test_design_example_parses_into_frozen_settings(tmp_path: Path) -> None:
    settings = load_settings(str(write(tmp_path, FULL)), environ={"TEST_OPENAI_KEY": "sk-from-env"})
    assert (settings.host, settings.port, settings.max_body_bytes) == ("0.0.0.0", 9090, 2 * 1024 * 1024)
    assert settings.store_url == "sqlite:///data/ctxgate.db"
    [route] = settings.models
    assert (route.model_name, route.model, route.api_key) == ("gpt-4o-mini", "openai/gpt-4o-mini", "sk-from-env")
    assert route.extra == {"timeout": 30}
    assert "sk-from-env" not in repr(settings)
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]


def test_every_value_read_from_the_environment_counts_as_a_secret(tmp_path: Path) -> None:
    text = ("model_list:\n  - model_name: bedrock\n    litellm_params:\n      model: bedrock/claude\n"
            "      aws_secret_access_key: os.environ/TEST_AWS_SECRET\n      aws_region_name: us-east-1\n")
    settings = load_settings(str(write(tmp_path, text)), environ={"TEST_AWS_SECRET": "aws-very-secret"})
    assert "aws-very-secret" in settings.secrets and "us-east-1" not in settings.secrets
    assert "aws-very-secret" not in repr(settings)


def test_no_config_runs_on_embedded_defaults() -> None:
    settings = load_settings(environ={})
    assert (settings.host, settings.port, settings.store_url, settings.models) == ("127.0.0.1", 8080, "./ctxgate.db", ())


def test_environment_overrides_file_and_flags_override_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "server: {port: 9000}\nstore: {url: from-file.db}\n")
    env = {"CTXGATE_CONFIG": str(path), "CTXGATE_PORT": "9100", "CTXGATE_DB": "from-env.db", "CTXGATE_HOST": "0.0.0.0"}
    settings = load_settings(environ=env)
    assert (settings.port, settings.store_url, settings.host) == (9100, "from-env.db", "0.0.0.0")
    settings = load_settings(environ=env, port=9200, db="from-flag.db")
    assert (settings.port, settings.store_url) == (9200, "from-flag.db")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("colour: blue\n", "colour"),
        ("server: {hots: 0.0.0.0}\n", "server.hots"),
        ("server: {port: eighty}\n", "server.port"),
        ("server: {port: true}\n", "server.port"),
        ("context: {budget_tokens: -5}\n", "context.budget_tokens"),
        ("logging: {level: loud}\n", "logging.level"),
        ("model_list: [{model_name: x}]\n", "model_list[0].litellm_params.model"),
        ("model_list: [{model_name: x, litellm_params: {model: openai/x}, extra: 1}]\n", "model_list[0]"),
        ("model_list: [{model_name: x, litellm_params: {model: openai/x, api_key: os.environ/NOPE_UNSET}}]\n",
         "NOPE_UNSET"),
        ("logging: {level: }\n", "logging.level"),
        ("store: {url: }\n", "store.url"),
        ("[1, 2]\n", "top level"),
        ("server: {port: [\n", "not valid YAML"),
    ],
)
def test_errors_name_the_file_and_the_field(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(str(path), environ={})
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


def test_empty_sections_mean_defaults(tmp_path: Path) -> None:
    settings = load_settings(str(write(tmp_path, "server:\nmodel_list:\npolicy:\n")), environ={})
    assert (settings.port, settings.models) == (8080, ())


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_settings(str(tmp_path / "absent.yaml"), environ={})


def test_the_example_deploy_config_loads() -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "ctxgate.yaml"
    settings = load_settings(str(example), environ={"OPENAI_API_KEY": "sk-example-1", "ANTHROPIC_API_KEY": "sk-example-2"})
    assert settings.spool_dir == "/spool" and settings.header_timeout_s == 30 and settings.body_timeout_s == 120


def test_timeouts_must_be_positive(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("server: {header_timeout_s: 0}\n")
    with pytest.raises(ConfigError, match="server.header_timeout_s: must be a positive number of seconds"):
        load_settings(str(config), environ={})


def test_a_pasted_litellm_settings_applies_drop_params_and_names_what_it_does_not(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("litellm_settings: {drop_params: true}\n")
    assert load_settings(str(config), environ={}).drop_params is True
    config.write_text("litellm_settings: {drop_params: true, success_callback: [langfuse]}\n")
    with pytest.raises(ConfigError, match="litellm_settings.success_callback: not applied by ctxgate"):
        load_settings(str(config), environ={})
