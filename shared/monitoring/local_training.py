"""A small real training entrypoint for the local runner and the demo: trains a scikit-learn
logistic regression on generated data and registers it as a new version of the model in the
MLflow registry at MLFLOW_TRACKING_URI, which sends `model_version.created` and so runs the
gates on it again.

    python -m shared.monitoring.local_training --model fraud [--shift 0.8] [--rows 4000]

The data: four numeric features (amount, age, tenure, velocity) drawn from N(shift, 1), a label
drawn from a logistic model of them (so a logistic regression is well calibrated on it). The
version carries the lineage tags the gates ask for and the retraining parameters (alert
fingerprint, reason, window) it was started with; its run carries the reference distribution
the monitor compares traffic with (shared.monitoring.reference).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

FEATURES = ("amount", "age", "tenure", "velocity")
WEIGHTS = np.array([1.2, -0.8, 0.5, 1.5])
BIAS = -0.3


def generate(rows: int, seed: int = 0, shift: float = 0.0):
    """(features DataFrame, 0/1 labels) from the generating model, inputs shifted by `shift`."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    values = rng.normal(shift, 1.0, size=(rows, len(FEATURES)))
    probability = 1.0 / (1.0 + np.exp(-(values @ WEIGHTS + BIAS)))
    labels = (rng.random(rows) < probability).astype(int)
    return pd.DataFrame(values, columns=list(FEATURES)), labels


def train_and_register(model_name: str, *, rows: int = 4000, seed: int = 0, shift: float = 0.0,
                       experiment: str = "gatehouse-retraining",
                       parameters: dict[str, str] | None = None) -> dict:
    import mlflow
    from mlflow import MlflowClient
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    from shared.monitoring.reference import log_reference, reference_from_frame

    parameters = {k: v for k, v in (parameters or {}).items() if v}
    features, labels = generate(rows, seed, shift)
    split = int(rows * 0.75)
    model = LogisticRegression(max_iter=500).fit(features[:split], labels[:split])
    holdout, holdout_labels = features[split:], labels[split:]
    scores = model.predict_proba(holdout)[:, 1]
    accuracy = float(np.mean((scores >= 0.5) == (holdout_labels == 1)))

    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=f"train-{model_name}") as run:
        mlflow.log_params({"rows": rows, "seed": seed, "shift": shift,
                           **{f"retrain_{k}": v[:250] for k, v in parameters.items()}})
        mlflow.log_metric("holdout_accuracy", accuracy)
        mlflow.set_tags({"dataset_version": f"generated-seed{seed}-shift{shift:g}",
                         "feature_store_table": "generated.features", "team": "gatehouse"})
        info = mlflow.sklearn.log_model(
            model, name="model", registered_model_name=model_name,
            signature=infer_signature(holdout, model.predict_proba(holdout)),
            input_example=holdout.iloc[:2], pyfunc_predict_fn="predict_proba")
        version = str(info.registered_model_version)
        reference = reference_from_frame(model_name, version, holdout, scores=scores,
                                         labels=holdout_labels)
        log_reference(reference, run.info.run_id)
    client = MlflowClient()
    tags = {"dataset_version": f"generated-seed{seed}-shift{shift:g}",
            "feature_store_table": "generated.features", "team": "gatehouse",
            **{f"gatehouse.retraining.{k}": v[:5000] for k, v in parameters.items()}}
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, value)
    return {"model": model_name, "version": version, "run_id": run.info.run_id,
            "holdout_accuracy": accuracy}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.environ.get("GATEHOUSE_RETRAIN_MODEL"))
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shift", type=float,
                        default=float(os.environ.get("GATEHOUSE_RETRAIN_SHIFT") or 0.0))
    parser.add_argument("--experiment", default="gatehouse-retraining")
    args = parser.parse_args(argv)
    if not args.model:
        parser.error("--model (or GATEHOUSE_RETRAIN_MODEL) is required")
    parameters = {key: os.environ.get(f"GATEHOUSE_RETRAIN_{key.upper()}", "")
                  for key in ("reason", "window", "alert_fingerprint")}
    result = train_and_register(args.model, rows=args.rows, seed=args.seed, shift=args.shift,
                                experiment=args.experiment, parameters=parameters)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
