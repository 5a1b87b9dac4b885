"""Configuration: the YAML file, environment overrides and CLI flags, parsed once into frozen values.

This is the only module that reads `os.environ`. Errors name the file and the field.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Set
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from capture.backends import sqlite_path
from policy.rules import PolicyConfigError, PolicySet, parse_policy
from proxy.config.keys import KeyConfigError, VirtualKey, parse_keys
from proxy.config.notifications import NotificationConfigError, NotificationSettings, parse_notifications
from proxy.config.telemetry import TelemetryConfigError, TelemetrySettings, parse_telemetry

DEFAULT_DB = "./ctxgate.db"
CONFIG_FILE = "ctxgate.yaml"  # looked for in the current directory


class ConfigError(ValueError):
    """A configuration that cannot be used; the message says where and why."""


@dataclass(frozen=True, slots=True)
class ModelRoute:
    """One `model_list` entry: the name clients use and the litellm parameters behind it."""

    model_name: str
    model: str
    api_base: str | None = None
    api_key: str | None = field(default=None, repr=False)
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)
    env_values: tuple[str, ...] = field(default=(), repr=False)  # read via os.environ/: treated as secrets
    transport: str | None = None  # native | translate; None: native where the provider speaks OpenAI chat


@dataclass(frozen=True, slots=True)
class ContextSettings:
    enabled: bool = True
    budget_tokens: int = 1500


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int | None = None  # `serve` processes on the port; None: the CPUs the process may use
    max_body_bytes: int = 8 * 1024 * 1024
    shutdown_timeout_s: float = 30.0
    header_timeout_s: float = 30.0  # for a request's line and headers to arrive, from its first byte
    body_timeout_s: float = 120.0  # for a request's body to arrive, once its headers are in
    store_url: str = DEFAULT_DB
    spool_dir: str | None = None  # None: beside a SQLite file (`<db>.spool`), else ./ctxgate-spool
    models: tuple[ModelRoute, ...] = ()
    default_project: str = "default"
    upstream_timeout_s: float = 600.0
    context: ContextSettings = ContextSettings()
    context_projects: Mapping[str, ContextSettings] = field(default_factory=dict)
    policy: PolicySet = field(default_factory=PolicySet)
    keys: tuple[VirtualKey, ...] = ()
    retention_days: int | None = None
    drop_params: bool = False  # litellm_settings.drop_params: litellm drops what a provider does not take
    log_level: str = "info"
    log_format: str = "json"
    admin_key: str | None = field(default=None, repr=False)
    metrics_token: str | None = field(default=None, repr=False)  # also admits to /metrics
    is_metrics_public: bool = False  # /metrics open even where keys guard everything else
    environment_secrets: tuple[str, ...] = field(default=(), repr=False)  # provider keys litellm may read
    notifications: NotificationSettings = NotificationSettings()
    telemetry: TelemetrySettings = TelemetrySettings()

    def context_for(self, project: str) -> ContextSettings:
        return self.context_projects.get(project, self.context)

    def route_for(self, model_name: str) -> ModelRoute | None:
        for route in self.models:
            if route.model_name == model_name:
                return route
        return None

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every secret the settings hold, for redaction."""
        found = [r.api_key for r in self.models if r.api_key]
        found += [value for r in self.models for value in r.env_values]
        if self.admin_key:
            found.append(self.admin_key)
        if self.metrics_token:
            found.append(self.metrics_token)
        found += self.environment_secrets
        found += self.notifications.secrets
        found += self.telemetry.secrets
        return tuple(found)


_SCHEMA: dict[str, Any] = {
    "server": {"host": str, "port": int, "workers": int, "max_body_mb": (int, float), "shutdown_timeout_s": (int, float),
               "header_timeout_s": (int, float), "body_timeout_s": (int, float)},
    "store": {"url": str, "spool_dir": str},
    "metrics": {"token": str, "public": bool},
    "model_list": list,
    "default_project": str,
    "upstream": {"timeout_s": (int, float)},
    "context": {"enabled": bool, "budget_tokens": int, "projects": dict},
    "policy": {"default": dict, "projects": dict},
    "keys": list,
    "retention_days": int,
    "litellm_settings": dict,
    "logging": {"level": str, "format": str},
    "notifications": {"page_url": str, "webhooks": list},
    "telemetry": {"otlp_endpoint": str, "headers": dict, "service_name": str, "capture_content": bool,
                  "queue_size": int},
}
_LOG_LEVELS = ("debug", "info", "warning", "error")
_LOG_FORMATS = ("json", "console")


@dataclass(frozen=True, slots=True)
class ConfigSource:
    """The config file a command uses (None: none, embedded defaults) and what chose it."""

    path: Path | None
    chosen_by: str  # "--config", "CTXGATE_CONFIG", "the current directory", or "nothing"

    def describe(self) -> str:
        """For the user: `/srv/ctxgate.yaml (found in the current directory)`, `none (...)`."""
        if self.path is None:
            return f"none (no --config, no CTXGATE_CONFIG, no ./{CONFIG_FILE})"
        if self.chosen_by == "the current directory":
            return f"{self.path} (found in the current directory)"
        return f"{self.path} (from {self.chosen_by})"


def find_config(
    flag: str | None = None, environ: Mapping[str, str] | None = None, directory: Path | None = None
) -> ConfigSource:
    """The one order in which every command finds its config: `--config` (`flag`), else
    `CTXGATE_CONFIG`, else `ctxgate.yaml` in `directory` (the CLI passes the current directory;
    None looks in no directory). A file named by the flag or the variable need not exist yet:
    reading it then fails with its name."""
    env = os.environ if environ is None else environ
    if flag:
        return ConfigSource(Path(flag), "--config")
    if env.get("CTXGATE_CONFIG"):
        return ConfigSource(Path(env["CTXGATE_CONFIG"]), "CTXGATE_CONFIG")
    if directory is not None and (directory / CONFIG_FILE).is_file():
        return ConfigSource(directory / CONFIG_FILE, "the current directory")
    return ConfigSource(None, "nothing")


def load_settings(
    config: ConfigSource | str | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
    db: str | None = None,
    log_format: str | None = None,
    workers: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Settings from (lowest to highest precedence) defaults, the file, the environment, flags.
    `config` is what `find_config` chose, or a file path; None: `CTXGATE_CONFIG` if set."""
    env = os.environ if environ is None else environ
    if not isinstance(config, ConfigSource):
        config = find_config(config, env)
    settings = Settings()
    if config.path is not None:
        settings = _from_file(config.path, env)
    where = "environment"
    if env.get("CTXGATE_DB"):
        settings = replace(settings, store_url=env["CTXGATE_DB"])
    if env.get("CTXGATE_HOST"):
        settings = replace(settings, host=env["CTXGATE_HOST"])
    if env.get("CTXGATE_PORT"):
        settings = replace(settings, port=_port(env["CTXGATE_PORT"], f"{where}: CTXGATE_PORT"))
    if env.get("CTXGATE_WORKERS"):
        settings = replace(settings, workers=_workers(env["CTXGATE_WORKERS"], f"{where}: CTXGATE_WORKERS"))
    if env.get("CTXGATE_ADMIN_KEY"):
        settings = replace(settings, admin_key=env["CTXGATE_ADMIN_KEY"])
    settings = replace(settings, environment_secrets=_environment_secrets(env))
    if config.path is None:  # the standard OTEL_* variables apply without a file too
        settings = replace(settings, telemetry=_telemetry(None, None, env))
    if db:
        settings = replace(settings, store_url=db)
    if host:
        settings = replace(settings, host=host)
    if port is not None:
        settings = replace(settings, port=_port(port, "--port"))
    if workers is not None:
        settings = replace(settings, workers=_workers(workers, "--workers"))
    if log_format:
        if log_format not in _LOG_FORMATS:
            raise ConfigError(f"--log-format: must be one of {', '.join(_LOG_FORMATS)}")
        settings = replace(settings, log_format=log_format)
    return settings


@dataclass(frozen=True, slots=True)
class StoreChoice:
    """The store URL a command uses and what chose it, so a missing store can be explained."""

    url: str
    chosen_by: str  # "--db", "CTXGATE_DB", "store.url in FILE", or "the default ./ctxgate.db"


def find_store(db: str | None, config: ConfigSource, environ: Mapping[str, str] | None = None) -> StoreChoice:
    """The store for commands that work on it directly: `--db`, else `CTXGATE_DB`, else the
    config's `store.url`, else the default (the order `ctxgate serve` uses too). Of the config
    only the shape and `store` are read: a model key from an unset variable, say, does not
    stop a command that works on the store, but a file that is not a config does."""
    env = os.environ if environ is None else environ
    if db:
        return StoreChoice(db, "--db")
    if env.get("CTXGATE_DB"):
        return StoreChoice(env["CTXGATE_DB"], "CTXGATE_DB")
    if config.path is not None:
        url = _store_url_in(config.path)
        if url is not None:
            return StoreChoice(url, f"store.url in {config.path}")
    return StoreChoice(DEFAULT_DB, f"the default {DEFAULT_DB}")


def current_user(environ: Mapping[str, str] | None = None) -> str:
    """Who runs the CLI, for `decided_by`."""
    env = os.environ if environ is None else environ
    return env.get("USER") or env.get("LOGNAME") or "cli"


def _port(value: str | int, where: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: port must be an integer, got {value!r}") from None
    if not 0 <= number <= 65535:
        raise ConfigError(f"{where}: port must be between 0 and 65535, got {number}")
    return number


def _workers(value: str | int, where: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: workers must be an integer, got {value!r}") from None
    if number < 1:
        raise ConfigError(f"{where}: workers must be at least 1, got {number}")
    return number


def _read_file(path: Path) -> dict[str, Any]:
    """The file's mapping, its keys and their types checked; nothing resolved yet."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read config: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    _check_shape(raw, _SCHEMA, path)
    return raw


def spool_directory(store_url: str, spool_dir: str | None) -> Path | None:
    """`store.spool_dir`; by default beside a SQLite file (`<db>.spool/`), for other stores
    `./ctxgate-spool`; an in-memory SQLite store has none."""
    if spool_dir is not None:
        return Path(spool_dir)
    path = sqlite_path(store_url)
    if path == ":memory:":
        return None
    return Path(f"{path}.spool") if path else Path("ctxgate-spool")


def legacy_spool_file(store_url: str) -> Path | None:
    """Where versions before `store.spool_dir` spooled: beside the SQLite file."""
    path = sqlite_path(store_url)
    return None if path in (None, ":memory:") else Path(f"{path}.spool.jsonl")


def spool_dir_in(config: ConfigSource) -> str | None:
    """The config's `store.spool_dir`, read as `find_store` reads `store.url`."""
    if config.path is None:
        return None
    spool_dir: str | None = (_read_file(config.path).get("store") or {}).get("spool_dir")
    return spool_dir


def _store_url_in(path: Path) -> str | None:
    url: str | None = (_read_file(path).get("store") or {}).get("url")
    return url


def _from_file(path: Path, env: Mapping[str, str]) -> Settings:
    raw = _read_file(path)
    server = raw.get("server") or {}
    store = raw.get("store") or {}
    upstream = raw.get("upstream") or {}
    context = raw.get("context") or {}
    logging_ = raw.get("logging") or {}
    metrics = raw.get("metrics") or {}
    defaults = Settings()
    level = logging_.get("level", defaults.log_level).lower()
    if level not in _LOG_LEVELS:
        raise ConfigError(f"{path}: logging.level: must be one of {', '.join(_LOG_LEVELS)}")
    log_format = logging_.get("format", defaults.log_format)
    if log_format not in _LOG_FORMATS:
        raise ConfigError(f"{path}: logging.format: must be one of {', '.join(_LOG_FORMATS)}")
    max_body_mb = server.get("max_body_mb", 8)
    if max_body_mb <= 0:
        raise ConfigError(f"{path}: server.max_body_mb: must be positive")
    context_default = _context(context, ContextSettings(), f"{path}: context", {"enabled", "budget_tokens", "projects"})
    context_projects = {
        str(name): _context(rules or {}, context_default, f"{path}: context.projects.{name}", {"enabled", "budget_tokens"})
        for name, rules in (context.get("projects") or {}).items()
    }
    return Settings(
        host=server.get("host", defaults.host),
        port=_port(server.get("port", defaults.port), f"{path}: server.port"),
        workers=_workers(server["workers"], f"{path}: server.workers") if "workers" in server else None,
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        shutdown_timeout_s=float(server.get("shutdown_timeout_s", defaults.shutdown_timeout_s)),
        header_timeout_s=_positive(server, "header_timeout_s", defaults.header_timeout_s, f"{path}: server"),
        body_timeout_s=_positive(server, "body_timeout_s", defaults.body_timeout_s, f"{path}: server"),
        store_url=store.get("url", defaults.store_url),
        spool_dir=store.get("spool_dir"),
        metrics_token=_resolve_secret(metrics.get("token"), f"{path}: metrics.token", env),
        is_metrics_public=metrics.get("public", False),
        models=tuple(_model_route(entry, i, path, env) for i, entry in enumerate(raw.get("model_list") or [])),
        default_project=raw.get("default_project", defaults.default_project),
        upstream_timeout_s=float(upstream.get("timeout_s", defaults.upstream_timeout_s)),
        context=context_default,
        context_projects=context_projects,
        policy=_policy(raw, path),
        keys=_keys(raw.get("keys"), path),
        retention_days=_retention_days(raw.get("retention_days"), path),
        drop_params=_litellm_settings(raw.get("litellm_settings") or {}, path),
        log_level=level,
        log_format=log_format,
        notifications=_notifications(raw.get("notifications"), path, env),
        telemetry=_telemetry(raw.get("telemetry"), path, env),
    )


def _notifications(raw: Any, path: Path, env: Mapping[str, str]) -> NotificationSettings:
    try:
        return parse_notifications(raw, "notifications", lambda value, where: _resolve_secret(value, f"{path}: {where}", env))
    except NotificationConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def _telemetry(raw: Any, path: Path | None, env: Mapping[str, str]) -> TelemetrySettings:
    where = f"{path}: " if path is not None else ""
    try:
        return parse_telemetry(raw, "telemetry", lambda value, at: _resolve_secret(value, f"{where}{at}", env), env)
    except TelemetryConfigError as error:
        raise ConfigError(f"{where}{error}") from None


def _context(raw: Any, base: ContextSettings, where: str, allowed: set[str]) -> ContextSettings:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a mapping")
    _refuse_unknown_keys(raw, allowed, where)
    enabled = raw.get("enabled", base.enabled)
    budget = raw.get("budget_tokens", base.budget_tokens)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}.enabled: must be true or false")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
        raise ConfigError(f"{where}.budget_tokens: must be a whole number of tokens, 0 or more")
    return ContextSettings(enabled=enabled, budget_tokens=budget)


# Names under which litellm and the provider SDKs read credentials from the environment.
_SECRET_NAME = re.compile(r"(?:^|_)(?:API_KEY|ACCESS_KEY|SECRET|SECRET_KEY|SECRET_ACCESS_KEY|TOKEN|AUTH_TOKEN|PASSWORD)$")


def _environment_secrets(env: Mapping[str, str]) -> tuple[str, ...]:
    """Values of the environment's credential variables, so that an upstream error echoing one
    is scrubbed; values under 8 characters are too short to be keys (and to scrub safely)."""
    return tuple(value for name, value in env.items() if _SECRET_NAME.search(name.upper()) and len(value) >= 8)


def _positive(section: Mapping[str, Any], key: str, default: float, where: str) -> float:
    value = section.get(key, default)
    if not 0 < value < float("inf"):
        raise ConfigError(f"{where}.{key}: must be a positive number of seconds")
    return float(value)


def _keys(raw: Any, path: Path) -> tuple[VirtualKey, ...]:
    try:
        return parse_keys(raw, "keys")
    except KeyConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


# Of a pasted LiteLLM proxy config's litellm_settings, what applies to ctxgate's calls.
_LITELLM_SETTINGS = ("drop_params",)


def _litellm_settings(raw: Mapping[str, Any], path: Path) -> bool:
    """`drop_params` is applied (through litellm); any other key is named, since a setting
    that would be silently ignored is worse than one refused."""
    for key in raw:
        if key not in _LITELLM_SETTINGS:
            raise ConfigError(f"{path}: litellm_settings.{key}: not applied by ctxgate (it applies: "
                              f"{', '.join(_LITELLM_SETTINGS)}); remove it")
    drop = raw.get("drop_params", False)
    if not isinstance(drop, bool):
        raise ConfigError(f"{path}: litellm_settings.drop_params: must be true or false")
    return drop


def _retention_days(raw: Any, path: Path) -> int | None:
    if raw is not None and raw <= 0:
        raise ConfigError(f"{path}: retention_days: must be a positive number of days")
    return raw if raw is None else int(raw)


def _policy(raw: Mapping[str, Any], path: Path) -> PolicySet:
    """No `policy` key at all: observe-only. Any `policy` key: enforced as written."""
    if "policy" not in raw:
        return PolicySet()
    try:
        return parse_policy(raw["policy"] or {})
    except PolicyConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def _refuse_unknown_keys(raw: Mapping[str, Any], known: Set[str], where: str) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")


def _check_shape(raw: Mapping[str, Any], schema: Mapping[str, Any], path: Path, prefix: str = "") -> None:
    for key, value in raw.items():
        place = f"{path}: {prefix}{key}"
        if key not in schema:
            raise ConfigError(f"{place}: unknown key {key!r} (known: {', '.join(schema)})")
        expected = schema[key]
        if value is None:
            if isinstance(expected, dict) or expected in (list, dict):
                continue  # an empty section or list: the defaults
            raise ConfigError(f"{place}: must be {_type_name(expected)}, got nothing")
        if isinstance(expected, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{place}: must be a mapping")
            _check_shape(value, expected, path, f"{prefix}{key}.")
        elif isinstance(value, bool) and expected is not bool or not isinstance(value, expected):
            raise ConfigError(f"{place}: must be {_type_name(expected)}, got {type(value).__name__}")


def _type_name(expected: Any) -> str:
    if isinstance(expected, tuple):
        return " or ".join(t.__name__ for t in expected)
    return str(expected.__name__)


_ROUTE_KEYS = {"model_name", "litellm_params", "model_info", "transport"}
TRANSPORTS = ("native", "translate")


def _model_route(entry: Any, index: int, path: Path, env: Mapping[str, str]) -> ModelRoute:
    where = f"{path}: model_list[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a mapping with model_name and litellm_params")
    _refuse_unknown_keys(entry, _ROUTE_KEYS, where)
    name = entry.get("model_name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}.model_name: required, a non-empty string")
    transport = entry.get("transport")
    if transport is not None and transport not in TRANSPORTS:
        raise ConfigError(f"{where}.transport: must be native or translate, got {transport!r}")
    params = entry.get("litellm_params")
    if not isinstance(params, dict) or not isinstance(params.get("model"), str):
        raise ConfigError(f"{where}.litellm_params.model: required, a string such as openai/gpt-4o-mini")
    resolved = {key: _resolve_secret(value, f"{where}.litellm_params.{key}", env) for key, value in params.items()}
    from_env = tuple(
        str(resolved[key]) for key, value in params.items()
        if isinstance(value, str) and value.startswith("os.environ/") and resolved[key]
    )
    return ModelRoute(
        model_name=name,
        model=resolved.pop("model"),
        api_base=resolved.pop("api_base", None),
        api_key=resolved.pop("api_key", None),
        extra=resolved,
        env_values=from_env,
        transport=transport,
    )


def _resolve_secret(value: Any, where: str, env: Mapping[str, str]) -> Any:
    """`os.environ/NAME` (the LiteLLM proxy's notation) reads NAME from the environment."""
    if isinstance(value, str) and value.startswith("os.environ/"):
        name = value.removeprefix("os.environ/")
        if name not in env:
            raise ConfigError(f"{where}: environment variable {name} is not set")
        return env[name]
    return value
