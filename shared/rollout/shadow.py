"""The shadow step's judge (pure): does the challenger agree with the champion on mirrored live
traffic (every request scored by both, only the champion's answer returned)?

- ROLLBACK at any look: the challenger shown to fail mirrored requests more often than the
  champion (on the requests only one of them failed, an anytime-valid split test: e-value at
  1/(alpha/2)); or its predictions unlike the champion's (shared/rollout/quality.py
  `prediction_shift`: PSI over `max_prediction_psi` once both have `min_shadow_requests`
  predictions, or the disagreement rate's confidence-sequence lower bound over
  `max_disagreement_rate`, at alpha/2). A literal "no failure at all" would roll back an
  identical model at any non-zero error baseline; this rolls one back with chance <= alpha.
- ADVANCE (the first real traffic) once `min_shadow_requests` mirrored requests were scored and,
  for classifiers, the disagreement rate's upper bound is at or under `max_disagreement_rate`.
- HOLD otherwise, with the time to a decision at the observed mirrored traffic.
"""

from __future__ import annotations

from shared.rollout.judge import Action, Verdict, e_test
from shared.rollout.policy import RolloutPolicy
from shared.rollout.quality import (
    PredictionComparison,
    disagreement_bounds,
    failure_evidence,
    prediction_shift,
)


def judge_shadow(policy: RolloutPolicy, comparison: PredictionComparison | None, *, now: float,
                 started: float) -> Verdict:
    """One look at the shadow step, mirroring since `started`."""
    seconds = max(0.0, now - started)
    figures = {"window_seconds": seconds, **(comparison.figures() if comparison else {})}
    if comparison is None or not comparison.mirrored_requests:
        return Verdict(Action.HOLD, f"no mirrored requests scored in the {seconds:.0f}s since "
                                    f"mirroring began: the shadow step waits for live traffic",
                       figures)
    mirrored, failed = comparison.mirrored_requests, comparison.challenger_failures
    halved = policy.model_copy(update={"alpha": policy.alpha / 2})
    bounds = disagreement_bounds(comparison, halved.alpha) if comparison.paired else None
    if bounds is not None:
        figures.update(disagreement_lower=bounds.lower, disagreement_upper=bounds.upper)
    failures = e_test(f"failures: challenger fails mirrored requests > "
                      f"{policy.rollback_error_ratio:g} x as often as the champion",
                      failure_evidence(comparison, policy), halved.alpha)
    figures["e_failures"] = failures.statistic
    if failures.significant:
        return Verdict(Action.ROLLBACK, f"shadow step: the challenger failed {failed} of "
                                        f"{mirrored} mirrored requests the champion answered "
                                        f"(the champion failed {comparison.champion_failures} "
                                        f"the challenger answered; e={failures.statistic:.3g} "
                                        f">= {1 / failures.alpha:.3g})",
                       figures, (failures,), looked=True)
    shifted = prediction_shift(halved, comparison, policy.min_shadow_requests)
    if shifted:
        return Verdict(Action.ROLLBACK, f"shadow step: challenger's predictions unlike the "
                                        f"champion's on the same requests: {shifted}",
                       figures, (failures,), looked=True)
    eta = _time_to_decision(policy, mirrored, seconds)
    if mirrored < policy.min_shadow_requests:
        return Verdict(Action.HOLD, f"shadow step: {mirrored} of {policy.min_shadow_requests} "
                                    f"mirrored requests scored; nothing unlike the champion "
                                    f"yet{_eta(eta)}", figures, (failures,),
                       time_to_decision_seconds=eta, looked=True)
    if bounds is not None and bounds.upper > policy.max_disagreement_rate:
        return Verdict(Action.HOLD, f"shadow step: disagreement {comparison.disagreement_rate:.3f}"
                                    f" over {comparison.paired} requests, its upper bound "
                                    f"{bounds.upper:.3f} not yet at or under "
                                    f"max_disagreement_rate {policy.max_disagreement_rate:g}",
                       figures, (failures,), looked=True)
    return Verdict(Action.ADVANCE, f"shadow step: agrees with the champion over {mirrored} "
                                   f"mirrored requests ({_agreement(policy, comparison, bounds)})",
                   figures, (failures,), time_to_decision_seconds=0.0, looked=True,
                   full_evidence=True)


def _agreement(policy: RolloutPolicy, comparison: PredictionComparison, bounds) -> str:
    parts = [f"{comparison.challenger_failures} failures against the champion's "
             f"{comparison.champion_failures}"]
    if comparison.psi is not None:
        parts.append(f"prediction PSI {comparison.psi:.3f} <= {policy.max_prediction_psi:g}")
    if bounds is not None:
        parts.append(f"disagreement {comparison.disagreement_rate:.3f}, upper bound "
                     f"{bounds.upper:.3f} <= {policy.max_disagreement_rate:g}")
    return ", ".join(parts)


def _time_to_decision(policy: RolloutPolicy, mirrored: int, seconds: float) -> float | None:
    if mirrored >= policy.min_shadow_requests:
        return 0.0
    if seconds <= 0:
        return None
    return (policy.min_shadow_requests - mirrored) * seconds / mirrored


def _eta(eta: float | None) -> str:
    return (f"; about {eta:.0f}s to a decision at the mirrored traffic" if eta is not None
            else "")
