"""The `rollout` section of the policy file: how a challenger earns production traffic.

    [defaults.rollout]
    steps = [5, 25, 50, 100]        # percent of traffic to the challenger, last step = promotion
    min_bake_seconds = 900
    min_requests_per_step = 500

    [models."fraud".rollout]
    endpoint = "fraud-prod"         # the serving endpoint (default: derived from the model name)
"""

from __future__ import annotations

import re
from itertools import pairwise
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

ENDPOINT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


class RolloutPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint: str | None = Field(
        default=None, description="serving endpoint name; default: the model name's last part")
    steps: tuple[int, ...] = Field(default=(5, 25, 50, 100),
                                   description="challenger traffic percent per step; ends at 100")
    min_bake_seconds: float = Field(default=900.0, ge=0)
    min_requests_per_step: int = Field(default=500, ge=1,
                                       description="per version, in the step's window")
    max_p99_latency_ratio: float = Field(default=1.2, gt=1.0,
                                         description="challenger p99 / champion p99 allowed")
    max_error_rate: float = Field(default=0.01, ge=0, lt=1,
                                  description="SLA cap: a challenger shown above it is rolled "
                                              "back (unless the champion is shown above it too)")
    error_margin_absolute: float = Field(
        default=0.002, ge=0, lt=1,
        description="promotion needs the challenger's error rate shown at most the champion's "
                    "plus max(this, error_margin_relative x the champion's)")
    error_margin_relative: float = Field(default=0.5, ge=0)
    rollback_error_ratio: float = Field(
        default=1.1, ge=1.0,
        description="rollback on errors needs the challenger's error rate shown above this x "
                    "the champion's (1: any excess); keep it under 1 + error_margin_relative, "
                    "so what is tolerated here stays within the promotion margin")
    latency_tail_share: float = Field(
        default=0.01, gt=0, le=1,
        description="promotion needs the share of challenger requests slower than "
                    "max_p99_latency_ratio x the champion's p99 shown at most this (0.01: its "
                    "p99 within the ratio)")
    alpha: float = Field(default=0.05, gt=0, lt=0.5,
                         description="chance, per rollout, of rolling back a model no worse "
                                     "than its champion (and of each promotion bound failing)")
    warmup_seconds: float = Field(default=60.0, ge=0,
                                  description="the least warm-up after a config change")
    max_warmup_seconds: float = Field(
        default=600.0, ge=0,
        description="warm-up ends by then at the latest; <= warmup_seconds: a fixed warm-up")
    warm_latency_ratio: float = Field(
        default=2.0, gt=1.0,
        description="the challenger is warm once its median latency is within this (or "
                    "max_p99_latency_ratio) x the champion's ...")
    warmup_stable_seconds: float = Field(
        default=300.0, gt=0, description="... or its median has held steady this long")
    max_prediction_psi: float = Field(
        default=0.2, gt=0,
        description="the challenger's predictions against the champion's on the same traffic "
                    "(PSI on the reference's prediction bins, both with at least "
                    "min_requests_per_step predictions): above it = rollback")
    max_disagreement_rate: float = Field(
        default=0.1, gt=0, lt=1,
        description="classifiers, on requests both versions scored (the shadow step): the "
                    "share whose predicted labels differ; rollback once its confidence "
                    "sequence's lower bound is above this, agreement needs its upper bound at "
                    "or under it")
    shadow_step: bool = Field(
        default=True,
        description="before the first step, mirror live traffic to the challenger (no user "
                    "sees its answers) where the backend can; elsewhere recent payloads are "
                    "replayed instead")
    min_shadow_requests: int = Field(
        default=500, ge=1,
        description="mirrored requests the challenger must score (and agree on) before it "
                    "takes real traffic")
    max_shadow_seconds: float = Field(
        default=1800.0, ge=0,
        description="a shadow step without a decision this long raises rollout.stalled "
                    "(on_stall then says hold or roll back; 0: never)")
    max_extensions: int = Field(default=3, ge=0,
                                description="extra bake periods when a step is inconclusive")
    max_hold_seconds: float = Field(
        default=1800.0, ge=0,
        description="a step held this long without a decision raises rollout.stalled (0: never)")
    on_stall: Literal["hold", "abort"] = Field(
        default="hold", description="after rollout.stalled: keep holding, or roll back")
    on_newer_challenger: Literal["queue", "supersede"] = "queue"
    rollback_window_seconds: float = Field(default=7 * 24 * 3600.0, ge=0,
                                           description="previous champion kept deployable")
    replay_sample_size: int = Field(default=50, ge=0,
                                    description="recent live payloads replayed before 1st step")

    @field_validator("endpoint")
    @classmethod
    def _endpoint_name(cls, value: str | None) -> str | None:
        if value is not None and not ENDPOINT_NAME.match(value):
            raise ValueError("endpoint names are 1-63 letters, digits, '-' or '_', "
                             "starting with a letter or digit")
        return value

    @field_validator("steps")
    @classmethod
    def _step_plan(cls, steps: tuple[int, ...]) -> tuple[int, ...]:
        if not steps:
            raise ValueError("at least one step is needed")
        if any(not 0 < step <= 100 for step in steps):
            raise ValueError("every step is a percentage in 1..100")
        if any(b <= a for a, b in pairwise(steps)):
            raise ValueError("steps must strictly increase")
        if steps[-1] != 100:
            raise ValueError("the last step must be 100 (promotion)")
        return steps

    def endpoint_for(self, model_name: str) -> str:
        """The endpoint serving `model_name`: the policy's, or one derived from the model name
        (the last part of a Unity Catalog three-level name, cleaned to endpoint characters)."""
        if self.endpoint:
            return self.endpoint
        base = re.sub(r"[^A-Za-z0-9_-]+", "-", model_name.split(".")[-1]).strip("-_")
        return (base or "model")[:63]

    @property
    def canary_steps(self) -> tuple[int, ...]:
        """The judged steps (all but the final 100%, which is promotion)."""
        return self.steps[:-1]

