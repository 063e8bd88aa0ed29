"""Performance metrics, each computable for many bootstrap replicates at once.

`metric_value(name, y, score)` is the plain number; `metric_replicates(name, y, score, weights)`
evaluates it under a (replicates, rows) matrix of resampling counts, as `weights` in
scikit-learn's `sample_weight` sense. Definitions (scikit-learn's, which the tests check):

- binary: y in {0, 1}, score = P(y = 1). Predicted positive means score >= threshold.
  auc = ROC AUC (Mann-Whitney, ties count one half); accuracy; f1, precision, recall of the
  positive class (0 when undefined, as zero_division=0); log_loss = -mean(y log p + (1-y) log(1-p))
  with p clipped to [eps, 1 - eps], eps = float64 machine epsilon; brier = mean((p - y)^2).
- multiclass: y in {0..K-1}, score = (n, K) probabilities. accuracy and macro f1 of argmax;
  log_loss = -mean(log p_y) clipped as above; brier = mean(sum_k (p_k - 1[y = k])^2) (Brier 1950);
  auc = macro one-vs-rest ROC AUC.
- regression: rmse, mae, r2 = 1 - SS_res / SS_tot (weighted mean for SS_tot).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]
# A metric is one number, or one per bootstrap replicate when evaluated under weights.
MetricValue = FloatArray | float
Labels = NDArray[Any]  # class labels as given: int, bool or float

HIGHER_IS_BETTER = {"auc": True, "accuracy": True, "f1": True, "precision": True,
                    "recall": True, "r2": True, "log_loss": False, "brier": False,
                    "rmse": False, "mae": False}
_EPS = np.finfo(np.float64).eps


def _weighted_mean(values: NDArray[np.floating], weights: FloatArray | None) -> MetricValue:
    if weights is None:
        mean: np.float64 = values.mean()
        return mean
    per_replicate: FloatArray = (weights @ values) / weights.sum(axis=1)
    return per_replicate


def binary_auc(y: Labels, score: FloatArray) -> float:
    """Unweighted ROC AUC by sorting each class once (faster than ranking all rows together)."""
    positives = np.sort(score[y == 1])
    negatives = np.sort(score[y != 1])
    if len(positives) == 0 or len(negatives) == 0:
        return float("nan")
    not_above = np.searchsorted(negatives, positives, side="right")
    tied = negatives[np.maximum(not_above - 1, 0)] == positives
    tied &= not_above > 0
    ties = 0
    if tied.any():  # a tie counts one half: subtract half of the negatives equal to each score
        where = np.flatnonzero(tied)
        ties = (not_above[where] - np.searchsorted(negatives, positives[where], "left")).sum()
    wins = not_above.sum(dtype=np.float64) - ties / 2
    return float(wins / (len(positives) * len(negatives)))


def binary_auc_replicates(y: Labels, score: FloatArray,
                          weights: FloatArray) -> FloatArray:
    order = np.argsort(score, kind="stable")
    ordered = score[order]
    positive = (y[order] == 1)
    w = weights[:, order]
    positive_weight = w * positive
    negative_weight = w * ~positive
    distinct = ordered[1:] != ordered[:-1]
    if not distinct.all():  # tied scores: one group per distinct score
        starts = np.flatnonzero(np.concatenate([[True], distinct]))
        positive_weight = np.add.reduceat(positive_weight, starts, axis=1)
        negative_weight = np.add.reduceat(negative_weight, starts, axis=1)
    below = np.cumsum(negative_weight, axis=1) - negative_weight
    with np.errstate(invalid="ignore", divide="ignore"):
        auc: FloatArray = ((positive_weight * (below + 0.5 * negative_weight)).sum(axis=1)
                           / (positive_weight.sum(axis=1) * negative_weight.sum(axis=1)))
    return auc


def _counts(hit: FloatArray, weights: FloatArray | None) -> MetricValue:
    return hit.sum() if weights is None else weights @ hit


def _ratio(numerator: MetricValue, denominator: MetricValue) -> MetricValue:
    with np.errstate(invalid="ignore", divide="ignore"):
        result = np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1),
                          0.0)
    return float(result) if np.ndim(result) == 0 else result


def _binary(name: str, y: Labels, p: FloatArray, weights: FloatArray | None,
            threshold: float) -> MetricValue:
    if name == "auc":
        return binary_auc(y, p) if weights is None else binary_auc_replicates(y, p, weights)
    if name == "log_loss":
        likelihood = np.where(y == 1, p, 1.0 - p)  # the probability given to the true class
        np.clip(likelihood, _EPS, 1 - _EPS, out=likelihood)
        return _weighted_mean(-np.log(likelihood), weights)
    if name == "brier":
        return _weighted_mean((p - y) ** 2, weights)
    predicted = p >= threshold
    actual = y == 1
    if name == "accuracy":
        return _weighted_mean((predicted == actual).astype(float), weights)
    true_positive = _counts((predicted & actual).astype(float), weights)
    if name == "precision":
        return _ratio(true_positive, _counts(predicted.astype(float), weights))
    if name == "recall":
        return _ratio(true_positive, _counts(actual.astype(float), weights))
    if name == "f1":
        both = _counts(predicted.astype(float), weights) + _counts(actual.astype(float), weights)
        return _ratio(2 * true_positive, both)
    raise ValueError(f"metric {name!r} does not apply to a binary classifier")


def _multiclass(name: str, y: NDArray[np.intp], proba: FloatArray,
                weights: FloatArray | None) -> MetricValue:
    n, k = proba.shape
    rows = np.arange(n)
    if name == "log_loss":
        return _weighted_mean(-np.log(np.clip(proba[rows, y], _EPS, 1 - _EPS)), weights)
    if name == "brier":
        squared = (proba ** 2).sum(axis=1) - 2 * proba[rows, y] + 1
        return _weighted_mean(squared, weights)
    if name == "auc":
        per_class = [_binary("auc", (y == c).astype(np.int8), proba[:, c], weights, 0.5)
                     for c in range(k)]
        macro_auc: MetricValue = np.nanmean(np.array(per_class, dtype=float), axis=0)
        return macro_auc
    predicted = proba.argmax(axis=1)
    if name == "accuracy":
        return _weighted_mean((predicted == y).astype(float), weights)
    if name == "f1":
        scores = []
        for c in range(k):
            actual, guessed = y == c, predicted == c
            true_positive = _counts((actual & guessed).astype(float), weights)
            both = _counts(actual.astype(float), weights) + _counts(guessed.astype(float), weights)
            scores.append(_ratio(2 * true_positive, both))
        present = (np.bincount(y, minlength=k) + np.bincount(predicted, minlength=k)) > 0
        macro_f1: MetricValue = np.mean(np.array(scores, dtype=float)[present], axis=0)
        return macro_f1
    raise ValueError(f"metric {name!r} does not apply to a multiclass classifier")


def _regression(name: str, y: FloatArray, prediction: FloatArray,
                weights: FloatArray | None) -> MetricValue:
    error = y - prediction
    if name == "rmse":
        return np.sqrt(_weighted_mean(error ** 2, weights))
    if name == "mae":
        return _weighted_mean(np.abs(error), weights)
    if name == "r2":
        residual = _weighted_mean(error ** 2, weights)
        mean = _weighted_mean(y, weights)
        spread = _weighted_mean(y ** 2, weights) - np.square(mean)
        with np.errstate(invalid="ignore", divide="ignore"):
            return 1 - residual / spread  # nan when y is constant
    raise ValueError(f"metric {name!r} does not apply to a regressor")


def _compute(name: str, task: str, y: ArrayLike, score: ArrayLike, weights: FloatArray | None,
             threshold: float) -> MetricValue:
    if task == "regression":
        return _regression(name, np.asarray(y, float), np.asarray(score, float), weights)
    score = np.asarray(score, dtype=float)
    if score.ndim == 2 and score.shape[1] == 2:
        score = score[:, 1]
    if score.ndim == 1:
        return _binary(name, np.asarray(y), score, weights, threshold)
    return _multiclass(name, np.asarray(y), score, weights)


def metric_value(name: str, task: str, y: ArrayLike, score: ArrayLike,
                 threshold: float = 0.5) -> float:
    return float(_compute(name, task, y, score, None, threshold))


def metric_replicates(name: str, task: str, y: ArrayLike, score: ArrayLike, weights: FloatArray,
                      threshold: float = 0.5) -> FloatArray:
    return np.asarray(_compute(name, task, y, score, weights, threshold), dtype=float)
