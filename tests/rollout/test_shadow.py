"""The shadow step's judge (pure): mirrored requests, both versions' answers to each."""

from __future__ import annotations

import numpy as np

from shared.rollout.judge import Action
from shared.rollout.policy import RolloutPolicy
from shared.rollout.quality import PredictionComparison
from shared.rollout.shadow import judge_shadow

POLICY = RolloutPolicy(min_shadow_requests=500)


def mirrored(n: int, *, disagreements: int = 0, challenger_failures: int = 0,
             champion_failures: int = 0, psi: float | None = 0.01) -> PredictionComparison:
    return PredictionComparison(psi, n, n, disagreements / n, paired=n,
                                disagreements=disagreements, mirrored_requests=n,
                                challenger_failures=challenger_failures,
                                champion_failures=champion_failures)


def look(comparison: PredictionComparison | None, seconds: float = 600.0):
    return judge_shadow(POLICY, comparison, now=1000.0 + seconds, started=1000.0)


def test_agreement_over_the_minimum_of_mirrored_requests_advances():
    verdict = look(mirrored(600, disagreements=12))
    assert verdict.action is Action.ADVANCE and "agrees with the champion over 600" in \
        verdict.reason
    assert verdict.figures["disagreement_upper"] <= POLICY.max_disagreement_rate


def test_too_few_mirrored_requests_hold_with_an_estimate():
    verdict = look(mirrored(100), seconds=60.0)
    assert verdict.action is Action.HOLD and "100 of 500 mirrored" in verdict.reason
    assert verdict.time_to_decision_seconds == 240.0
    assert look(None).action is Action.HOLD


def test_disagreement_shown_above_the_policy_rolls_back_early():
    verdict = look(mirrored(120, disagreements=60))   # before the minimum: evidence decides
    assert verdict.action is Action.ROLLBACK
    assert "max_disagreement_rate 0.1" in verdict.reason
    assert verdict.figures["disagreement_lower"] > 0.1


def test_psi_over_the_policy_rolls_back_once_both_have_enough_predictions():
    assert look(mirrored(200, psi=0.9)).action is Action.HOLD
    verdict = look(mirrored(500, psi=0.9))
    assert verdict.action is Action.ROLLBACK and "prediction PSI 0.900" in verdict.reason


def test_failures_are_judged_against_the_champions_on_the_same_requests():
    # A failing challenger: rolled back long before the minimum of mirrored requests.
    failing = look(mirrored(40, challenger_failures=20))
    assert failing.action is Action.ROLLBACK and "failed 20 of 40" in failing.reason
    # Alike at a 1% baseline: each fails a few requests the other answered; not rolled back.
    rng = np.random.default_rng(0)
    rolled_back = 0
    for _ in range(200):
        both = rng.random((2, 600)) < 0.01
        only_challenger = int((both[0] & ~both[1]).sum())
        only_champion = int((both[1] & ~both[0]).sum())
        verdict = look(mirrored(600, challenger_failures=only_challenger,
                                champion_failures=only_champion))
        rolled_back += verdict.action is Action.ROLLBACK
    assert rolled_back <= 0.05 * 200
