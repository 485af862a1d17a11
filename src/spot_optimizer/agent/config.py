"""The agent's persistent configuration (`./spot_optimizer_config.json` by default).

Fields follow the seed (agent_id, the four toggles, the launch configuration taken from the agent's own
instance, last_updated) plus a schema version, the agent's secret and the last known policy, which the
agent uses to act alone on a notice while the server is unreachable. Written atomically with mode 0600;
a corrupt file is reported by name and never silently overwritten.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from spot_optimizer.agent.fileio import atomic_write
from spot_optimizer.core.errors import ConfigError
from spot_optimizer.core.models import LaunchConfig, Toggles

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DEFAULT_CONFIG_PATH = Path("./spot_optimizer_config.json")


class LastKnownPolicy(BaseModel):
    """What the agent may do by itself when the control plane is unreachable."""

    instance_types: list[str] = Field(default_factory=list)  # allowed types, best first
    availability_zones: list[str] = Field(default_factory=list)
    allow_on_demand: bool = True


class AgentConfig(BaseModel):
    schema_version: int = SCHEMA_VERSION
    agent_id: str | None = None
    agent_secret: str | None = None
    server_url: str | None = None
    workload: str | None = None
    auto_switching: bool = False
    auto_terminate: bool = False
    manual_replica: bool = False
    emergency_only: bool = False
    current_instance_id: str | None = None
    current_instance_ami: str | None = None
    current_instance_type: str | None = None
    current_availability_zone: str | None = None
    current_security_groups: list[str] = Field(default_factory=list)
    current_subnet_id: str | None = None
    current_vpc_id: str | None = None
    current_iam_instance_profile: str | None = None
    current_key_name: str | None = None
    current_tags: dict[str, str] = Field(default_factory=dict)
    policy: LastKnownPolicy = Field(default_factory=LastKnownPolicy)
    last_updated: str | None = None

    @property
    def toggles(self) -> Toggles:
        return Toggles(auto_switching=self.auto_switching, auto_terminate=self.auto_terminate,
                       manual_replica=self.manual_replica, emergency_only=self.emergency_only)

    def set_toggles(self, toggles: Toggles) -> bool:
        """Apply toggles; True if anything changed."""
        changed = toggles != self.toggles
        for name, value in toggles.model_dump().items():
            setattr(self, name, value)
        return changed

    def set_launch_config(self, lc: LaunchConfig, instance_id: str) -> None:
        self.current_instance_id = instance_id
        self.current_instance_ami = lc.ami_id
        self.current_instance_type = lc.instance_type
        self.current_availability_zone = lc.availability_zone
        self.current_security_groups = list(lc.security_groups)
        self.current_subnet_id = lc.subnet_id
        self.current_vpc_id = lc.vpc_id
        self.current_iam_instance_profile = lc.iam_instance_profile
        self.current_key_name = lc.key_name
        self.current_tags = dict(lc.tags)

    def launch_config(self) -> LaunchConfig:
        if not self.current_instance_ami or not self.current_instance_type or not self.current_availability_zone:
            raise ConfigError("the launch configuration has not been discovered yet (no AMI/type/AZ in config)")
        return LaunchConfig(
            ami_id=self.current_instance_ami, instance_type=self.current_instance_type,
            availability_zone=self.current_availability_zone, subnet_id=self.current_subnet_id,
            vpc_id=self.current_vpc_id, security_groups=self.current_security_groups,
            iam_instance_profile=self.current_iam_instance_profile, key_name=self.current_key_name,
            tags=self.current_tags,
        )


class ConfigStore:
    def __init__(self, path: Path = DEFAULT_CONFIG_PATH) -> None:
        self.path = Path(path)

    def load(self) -> AgentConfig:
        """The config on disk, or a fresh one when the file does not exist. Raises ConfigError if corrupt."""
        if not self.path.exists():
            logger.info("No config file at %s: starting with a new configuration", self.path)
            return AgentConfig()
        try:
            raw = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {self.path}: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {self.path} is corrupt (not UTF-8 text); fix or move it away: "
                              "it will not be overwritten") from exc
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"config file {self.path} is corrupt (invalid JSON at line {exc.lineno}, column {exc.colno}); "
                "fix or move it away: it will not be overwritten"
            ) from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config file {self.path} is corrupt: expected a JSON object")
        version = data.get("schema_version", SCHEMA_VERSION)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise ConfigError(
                f"config file {self.path} has schema_version {version!r}; this agent understands "
                f"up to {SCHEMA_VERSION}"
            )
        try:
            config = AgentConfig.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"config file {self.path} is invalid: {exc.errors()[0].get('msg')} "
                              f"at {'.'.join(str(p) for p in exc.errors()[0].get('loc', ()))}") from exc
        logger.info("Config loaded from %s (agent_id=%s, toggles=%s)", self.path, config.agent_id,
                    config.toggles.model_dump())
        return config

    def save(self, config: AgentConfig) -> None:
        config.last_updated = datetime.now(UTC).isoformat()
        try:
            atomic_write(self.path, config.model_dump_json(indent=2) + "\n")
        except OSError as exc:
            raise ConfigError(f"cannot write config file {self.path}: {exc.strerror or exc}; "
                              "the previous file is left as it was") from exc
        logger.info("Config saved to %s (agent_id=%s, toggles=%s)", self.path, config.agent_id,
                    config.toggles.model_dump())
