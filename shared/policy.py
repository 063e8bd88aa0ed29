"""Policy as code: one file (TOML or YAML) with defaults and per-model overrides.

    [defaults.gates.ece]            # applies to every model
    threshold = 0.02

    [models."fraud".gates.ece]      # overrides for one registered model
    threshold = 0.03

Each model's policy is the built-in defaults, deep-merged with the file's `defaults`, then with
its `models.<name>` table, validated by pydantic. A model with no entry gets the defaults. Any
unknown key or bad value is a PolicyError naming the file, the key and what is allowed.
"""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.channels.policy import NotificationPolicy
from shared.foundation import runtime
from shared.foundation.storage import PROJECT_ROOT
from shared.gates.policy import GatePolicy
from shared.monitoring.policy import MonitoringPolicy
from shared.rollout.policy import RolloutPolicy

DEFAULT_POLICY_PATH = PROJECT_ROOT / "policy.toml"
log = logging.getLogger("gatehouse.policy")


class PolicyError(ValueError):
    pass


class ModelPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    gates: GatePolicy = Field(default_factory=GatePolicy)
    rollout: RolloutPolicy = Field(default_factory=RolloutPolicy)
    notifications: NotificationPolicy = Field(default_factory=NotificationPolicy)
    monitoring: MonitoringPolicy = Field(default_factory=MonitoringPolicy)


class _PolicyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(default=1, ge=1, le=1)
    defaults: dict = Field(default_factory=dict)
    models: dict[str, dict] = Field(default_factory=dict)


def deep_merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _problems(error: ValidationError, prefix: str) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in (prefix, *item["loc"]) if part != "")
        lines.append(f"{where}: {item['msg']}")
    return "; ".join(lines)


class Policy:
    """The parsed policy file; `for_model(name)` gives one model's validated policy."""

    def __init__(self, document: dict, origin: str = "<built-in defaults>"):
        self.origin = origin
        try:
            parsed = _PolicyFile.model_validate(document)
        except ValidationError as exc:
            raise PolicyError(f"{origin}: {_problems(exc, '')}") from None
        self._defaults = parsed.defaults
        self._models = parsed.models
        self.defaults = self._validate(self._defaults, "defaults")
        self._validated = {name: self._validate(deep_merge(self._defaults, overrides),
                                                f"models.{name}")
                           for name, overrides in self._models.items()}

    def _validate(self, document: dict, where: str) -> ModelPolicy:
        try:
            return ModelPolicy.model_validate(document)
        except ValidationError as exc:
            raise PolicyError(f"{self.origin}: {_problems(exc, where)}") from None

    def for_model(self, name: str | None) -> ModelPolicy:
        """The model's policy; the defaults for a model the file does not name, or for None."""
        if name is None:
            return self.defaults
        return self._validated.get(name, self.defaults)

    @property
    def models(self) -> list[str]:
        return sorted(self._models)


def parse_policy_text(text: str, origin: str) -> Policy:
    suffix = Path(origin).suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            import yaml

            document = yaml.safe_load(text) or {}
        else:
            document = tomllib.loads(text)
    except Exception as exc:  # the parsers' own errors say where the syntax broke
        raise PolicyError(f"{origin}: not valid {suffix.lstrip('.') or 'TOML'}: {exc}") from None
    if not isinstance(document, dict):
        raise PolicyError(f"{origin}: the policy must be a table/mapping at the top level")
    return Policy(document, origin)


def load_policy(path: str | Path | None = None) -> Policy:
    """The policy file at `path`, GATEHOUSE_POLICY_PATH, or ./policy.toml; defaults if none."""
    configured = runtime.settings().policy_path
    chosen = Path(path or configured or DEFAULT_POLICY_PATH)
    if not chosen.exists():
        if path or configured:
            raise PolicyError(f"{chosen}: policy file not found")
        return Policy({})
    return parse_policy_text(chosen.read_text(), str(chosen))


def _chosen_path() -> Path:
    return Path(runtime.settings().policy_path or DEFAULT_POLICY_PATH)


def _stamp(path: Path) -> tuple[str, int, int] | None:
    """What says the file changed: its path, modification time and size (None: no file)."""
    try:
        found = path.stat()
    except OSError:
        return None
    return str(path), found.st_mtime_ns, found.st_size


class CurrentPolicy:
    """The policy in force, re-read when its file changes (a stat per call): an edit takes
    effect without a restart. An edit that does not parse keeps the last good policy in force
    and is logged once as an error naming the file and the key."""

    def __init__(self) -> None:
        self._stamp: tuple[str, int, int] | None = None
        self._policy: Policy | None = None
        self._refused: tuple[str, int, int] | None = None

    def __call__(self) -> Policy:
        path = _chosen_path()
        stamp = _stamp(path)
        if self._policy is not None and stamp in (self._stamp, self._refused):
            return self._policy
        try:
            policy = load_policy()
        except PolicyError as exc:
            if self._policy is None:
                raise
            self._refused = stamp
            log.error("policy edit not applied, the last good policy stays in force: %s", exc)
            return self._policy
        if self._policy is not None:
            log.info("policy reloaded from %s", path)
        self._policy, self._stamp, self._refused = policy, stamp, None
        return policy

    def cache_clear(self) -> None:
        self._policy = self._stamp = self._refused = None


current_policy = CurrentPolicy()


def notification_policy_for(model_name: str | None) -> NotificationPolicy:
    """The `notifications` section for the model (the defaults' for None), from the current file."""
    return current_policy().for_model(model_name).notifications


def monitoring_policy_for(model_name: str | None) -> MonitoringPolicy:
    """The `monitoring` section for the model (the defaults' for None), from the current file."""
    return current_policy().for_model(model_name).monitoring
