"""Generated served traffic with known drift, as payload-log records, for the monitor's tests."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from shared.monitoring.labels import row_key
from shared.monitoring.local_training import FEATURES, generate
from shared.monitoring.reference import ReferenceDistribution, reference_from_frame
from shared.serving.payload_log import PayloadRecord

WINDOW = 300.0
START = 5_000_000  # a window index (epoch seconds / WINDOW) in 2017


@dataclass
class Fitted:
    model: object
    reference: ReferenceDistribution


def fit(seed: int = 1, rows: int = 6000) -> Fitted:
    from sklearn.linear_model import LogisticRegression

    features, labels = generate(rows, seed=seed)
    split = rows // 2
    model = LogisticRegression(max_iter=500).fit(features[:split], labels[:split])
    holdout = features[split:]
    reference = reference_from_frame("fraud", "1", holdout,
                                     scores=model.predict_proba(holdout)[:, 1],
                                     labels=labels[split:])
    return Fitted(model, reference)


def window_traffic(fitted: Fitted, window: int, rows: int, *, seed: int, shift: float = 0.0,
                   flip_labels: float = 0.0, version: str = "1", endpoint: str = "fraud-prod",
                   latency_ms: float = 20.0, error_rate: float = 0.0, batch: int = 1
                   ) -> tuple[list[PayloadRecord], dict[str, float]]:
    """One window of requests of `batch` rows each, and the rows' true labels by label key.
    `shift` moves every input's mean (covariate shift); `flip_labels` flips that share of labels
    (concept drift the inputs do not show)."""
    rng = np.random.default_rng(seed)
    features, labels = generate(rows, seed=seed, shift=shift)
    if flip_labels:
        flipped = rng.random(rows) < flip_labels
        labels = np.where(flipped, 1 - labels, labels)
    scores = fitted.model.predict_proba(features)[:, 1]
    values = features.to_numpy()
    requests = range(0, rows, batch)
    latencies = rng.gamma(4.0, latency_ms / 4.0, len(requests))
    failed = rng.random(len(requests)) < error_rate
    records, truth = [], {}
    for n, first in enumerate(requests):
        chunk = range(first, min(first + batch, rows))
        request_id = f"{endpoint}-{window}-{n}"
        inputs = json.dumps({"dataframe_split": {"columns": list(FEATURES),
                                                 "data": [values[i].tolist() for i in chunk]}})
        ok = not failed[n]
        outputs = json.dumps({"predictions": [[1 - scores[i], scores[i]] for i in chunk]})
        records.append(PayloadRecord(
            ts=window * WINDOW + (n + 0.5) * WINDOW / len(requests), endpoint=endpoint,
            request_id=request_id, model_name="fraud", version=version, inputs=inputs,
            outputs=outputs if ok else None, latency_ms=float(latencies[n]),
            status=200 if ok else 500, error=None if ok else "injected"))
        for index, i in enumerate(chunk):
            truth[row_key(request_id, index, len(chunk))] = float(labels[i])
    return records, truth
