"""When a version is warm (pure): after a traffic change nothing is measured until it is.

The backend must report the endpoint ready (the shell holds before that), at least
`warmup_seconds` must have passed since the change, and then the challenger's own latencies say
when it is warm, from one sample a look (the medians of both versions over the stretch since the
previous sample):
- its median within max(`warm_latency_ratio`, `max_p99_latency_ratio`) × the champion's: warm
  (a cold start is many times slower; a real regression of that size is the judge's to find);
- or its medians steady (largest / smallest <= `WARM_STEADY_SPREAD`) over the last
  `warmup_stable_seconds`: warm, however slow - a slow version that is not getting faster is
  not warming up, and the judge will weigh it;
- or `max_warmup_seconds` after the change: warm by the cap.
`max_warmup_seconds` <= `warmup_seconds` turns the rule off: a fixed warm-up, as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.rollout.judge import quantile
from shared.rollout.policy import RolloutPolicy
from shared.serving.base import VersionHealth

WARM_STEADY_SPREAD = 1.25
MAX_SAMPLES = 40


@dataclass(frozen=True)
class WarmupSample:
    """Both versions' median latency over the stretch ending at `end`."""

    end: float
    challenger_p50_ms: float | None
    champion_p50_ms: float | None
    challenger_requests: int

    def as_list(self) -> list[Any]:
        return [self.end, self.challenger_p50_ms, self.champion_p50_ms, self.challenger_requests]

    @classmethod
    def from_list(cls, values: list[Any]) -> WarmupSample:
        end, challenger, champion, requests = values
        return cls(float(end), challenger, champion, int(requests))


@dataclass(frozen=True)
class Warmth:
    warm: bool
    reason: str


def assess(policy: RolloutPolicy, applied_at: float, samples: tuple[WarmupSample, ...],
           now: float) -> Warmth:
    """Is the challenger warm at `now`, given the samples since the change at `applied_at`?"""
    elapsed = now - applied_at
    if elapsed < policy.warmup_seconds:
        return Warmth(False, f"minimum warm-up: {policy.warmup_seconds - elapsed:.0f}s left")
    if policy.max_warmup_seconds <= policy.warmup_seconds:
        return Warmth(True, f"fixed warm-up of {policy.warmup_seconds:.0f}s over")
    if elapsed >= policy.max_warmup_seconds:
        return Warmth(True, f"warm-up cap of {policy.max_warmup_seconds:.0f}s reached")
    limit = max(policy.warm_latency_ratio, policy.max_p99_latency_ratio)
    latest = next((s for s in reversed(samples) if s.challenger_p50_ms is not None), None)
    if latest is None:
        return Warmth(False, "no challenger latencies yet to tell whether it is warm")
    if latest.champion_p50_ms and latest.challenger_p50_ms is not None and \
            latest.challenger_p50_ms <= limit * latest.champion_p50_ms:
        return Warmth(True, f"warm after {elapsed:.0f}s: challenger median "
                            f"{latest.challenger_p50_ms:.1f} ms within {limit:g} x the "
                            f"champion's {latest.champion_p50_ms:.1f} ms")
    steady = _steady(policy, samples, now)
    if steady:
        return Warmth(True, f"warm after {elapsed:.0f}s: {steady}")
    champion = (f"{latest.champion_p50_ms:.1f} ms" if latest.champion_p50_ms
                else "no champion figure")
    return Warmth(False, f"warming up for {elapsed:.0f}s: challenger median "
                         f"{latest.challenger_p50_ms:.1f} ms vs the champion's {champion} "
                         f"(over {limit:g} x) and not steady for "
                         f"{policy.warmup_stable_seconds:.0f}s yet; at most "
                         f"{policy.max_warmup_seconds - elapsed:.0f}s more")


def _steady(policy: RolloutPolicy, samples: tuple[WarmupSample, ...], now: float) -> str:
    """Why the challenger's medians count as steady ('' when they do not)."""
    since = now - policy.warmup_stable_seconds
    recent = [s.challenger_p50_ms for s in samples
              if s.end > since and s.challenger_p50_ms is not None]
    covered = any(s.end <= since for s in samples)  # the samples reach back far enough
    if not covered or len(recent) < 2:
        return ""
    low, high = min(recent), max(recent)
    if low <= 0 or high / low > WARM_STEADY_SPREAD:
        return ""
    return (f"challenger median steady at {low:.1f}-{high:.1f} ms over the last "
            f"{policy.warmup_stable_seconds:.0f}s")


def sample_from(end: float, challenger: VersionHealth | None,
                champion: VersionHealth | None) -> WarmupSample:
    """A sample from both versions' figures over the same stretch."""
    return WarmupSample(end, quantile(challenger.latencies_ms, 0.5) if challenger else None,
                        quantile(champion.latencies_ms, 0.5) if champion else None,
                        challenger.requests if challenger else 0)
