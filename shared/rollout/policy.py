"""The `rollout` section of the policy file."""

from pydantic import BaseModel, ConfigDict


class RolloutPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
