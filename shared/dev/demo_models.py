"""The demo's data and models: a card-fraud-style generator with drift on demand, and the
classifiers the story registers (plain, well calibrated, over-confident).

`generate(rows, seed, drift)`: drift 0 is the training distribution; drift 1 moves transaction
amounts up (x2.7), shifts activity into the night and makes merchants riskier, which both the
feature PSI and the model's calibration notice.
"""

from __future__ import annotations

import numpy as np

FEATURES = ["amount", "hour", "distance", "merchant_risk"]
LABEL = "label"
LINEAGE_TAGS = {"dataset_version": "fraud-2026-11", "feature_store_table": "fs.payments.fraud",
                "team": "risk-ml"}


def generate(rows: int, seed: int = 0, drift: float = 0.0):
    import pandas as pd

    rng = np.random.default_rng(seed)
    amount = rng.lognormal(3.5 + drift, 1.0, rows)
    night_share = 0.2 + 0.4 * drift
    hour = np.where(rng.random(rows) < night_share, rng.integers(0, 5, rows),
                    rng.integers(5, 24, rows))
    distance = rng.exponential(10, rows)
    merchant_risk = rng.beta(2 + 2 * drift, 8, rows)
    logit = (-4.2 + 0.8 * np.log1p(amount) - 2.2 + 1.1 * (hour < 5) + 0.04 * distance
             + 3.2 * merchant_risk)
    label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"amount": amount, "hour": hour.astype(float), "distance": distance,
                         "merchant_risk": merchant_risk, LABEL: label})


def _design(frame):
    x = frame[FEATURES].to_numpy(dtype=float).copy()
    x[:, 0] = np.log1p(x[:, 0])
    night = (x[:, 1] < 5).astype(float)
    return np.column_stack([x[:, 0], night, x[:, 2], x[:, 3]])


class FraudModel:
    """A scikit-learn logistic regression on engineered features, with predict_proba on the raw
    columns; `sharpen` > 1 makes it over-confident (probabilities pushed toward 0 and 1)."""

    def __init__(self, columns: list[int] | None = None, sharpen: float = 1.0, seed: int = 0):
        from sklearn.linear_model import LogisticRegression

        self.columns = columns
        self.sharpen = sharpen
        self.model = LogisticRegression(max_iter=2000, random_state=seed)

    def _x(self, frame):
        design = _design(frame)
        return design[:, self.columns] if self.columns is not None else design

    def fit(self, frame) -> FraudModel:
        self.model.fit(self._x(frame), frame[LABEL].to_numpy())
        return self

    def predict_proba(self, frame):
        import pandas as pd

        if not isinstance(frame, pd.DataFrame):
            frame = pd.DataFrame(np.asarray(frame), columns=FEATURES)
        p = self.model.predict_proba(self._x(frame))[:, 1]
        if self.sharpen != 1.0:
            logit = np.log(np.clip(p, 1e-9, 1 - 1e-9) / np.clip(1 - p, 1e-9, 1))
            p = 1 / (1 + np.exp(-self.sharpen * logit))
        return np.column_stack([1 - p, p])

    def predict(self, frame):
        return (self.predict_proba(frame)[:, 1] >= 0.5).astype(int)


def train(kind: str, rows: int = 6000, seed: int = 0, drift: float = 0.0) -> FraudModel:
    """'basic' (all features, little data), 'good' (all features), 'overconfident' (good,
    sharpened x4)."""
    frame = generate(rows, seed=seed, drift=drift)
    if kind == "basic":
        return FraudModel(seed=seed).fit(frame.head(1200))
    if kind == "good":
        return FraudModel(seed=seed).fit(frame)
    if kind == "overconfident":
        return FraudModel(sharpen=4.0, seed=seed).fit(frame)
    raise ValueError(f"unknown model kind {kind!r}: basic, good or overconfident")


def pinned_requirements() -> list[str]:
    """What the model needs, pinned to what is installed. Named rather than inferred: MLflow's
    inference loads the model in a subprocess to see what it imports, about 4 s per version."""
    from importlib.metadata import version

    return [f"{package}=={version(package)}"
            for package in ("scikit-learn", "numpy", "pandas", "cloudpickle")]


def log_and_register(model: FraudModel, model_name: str, run_name: str,
                     tags: dict[str, str] | None = None, sample_seed: int = 99) -> str:
    """Log `model` as an MLflow sklearn-flavoured pyfunc (predict = predict_proba, with a
    signature) under lineage tags, register it, and return the new version."""
    import mlflow
    from mlflow.models import infer_signature

    sample = generate(200, seed=sample_seed)[FEATURES]
    with mlflow.start_run(run_name=run_name, tags={**LINEAGE_TAGS, **(tags or {})}):
        info = mlflow.sklearn.log_model(
            model, name="model", registered_model_name=model_name,
            pyfunc_predict_fn="predict_proba", input_example=sample.head(3),
            serialization_format="cloudpickle", pip_requirements=pinned_requirements(),
            signature=infer_signature(sample, model.predict_proba(sample)))
    return str(info.registered_model_version)


def retrain_main(argv: list[str] | None = None) -> int:
    """The demo's retraining entrypoint (the local runner starts it): trains the calibrated model
    on recent, drifted data and registers it, tagged with why it was retrained."""
    import argparse
    import os

    parser = argparse.ArgumentParser(prog="python -m shared.dev.demo_models",
                                     description=retrain_main.__doc__)
    parser.add_argument("--retrain", action="store_true", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--drift", type=float, default=1.0)
    args = parser.parse_args(argv)
    reason = {key: os.environ.get(f"GATEHOUSE_RETRAIN_{key.upper()}", "")
              for key in ("reason", "window", "alert_fingerprint")}
    version = log_and_register(train("good", seed=7, drift=args.drift), args.model,
                               "fraud-retrained",
                               tags={f"gatehouse.retrain.{k}": v for k, v in reason.items() if v})
    print(f"registered {args.model} v{version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(retrain_main())
