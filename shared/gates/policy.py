"""The `gates` section of the policy file."""

from pydantic import BaseModel, ConfigDict


class GatePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
