"""Calibration-first promotion gates (imported only by the run-gates handler).

Pure gate library: calibration (ECE, reliability), bootstrap (intervals and the inconclusive
verdict), conformal (coverage), comparison + metrics (against the champion), drift, fairness,
schema, lineage, latency; suite runs them into a report, decision turns the report into registry
actions, report renders it. Adapters: evaluation (data and predictions), mlflow_report.
Policy: the `gates` section of the policy file (policy.py).
"""
