"""Calibration-first promotion gates.

Pure gate library: calibration (ECE, reliability), bootstrap (intervals and the inconclusive
verdict), conformal (coverage), comparison + metrics (against the champion), drift, fairness,
schema, lineage, latency. catalog is the table of gates (name, policy section, judge), context
what they share, suite runs the table into a report, decision turns the report into registry
actions, report renders it, request says what asks for a run.
Shell: service (GateService: a run, a side-effect-free evaluation, the re-run request).
Adapters: gathering + evaluation (registry facts, data and predictions), evidence +
mlflow_report (the report run). Policy: the `gates` section of the policy file (policy.py).
"""
