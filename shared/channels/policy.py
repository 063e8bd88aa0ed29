"""The `notifications` section of the policy file."""

from pydantic import BaseModel, ConfigDict


class NotificationPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
