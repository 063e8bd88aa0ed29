"""Reading what the suite judges (an adapter): the registry's facts about the candidate and its
champion, the evaluation data, both models' predictions on it and their latency."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from shared.gates import evaluation
from shared.gates.evaluation import EvaluationDataError
from shared.gates.inputs import ModelOutputs, SuiteInputs
from shared.gates.latency import LatencyStats, measure_latency
from shared.gates.policy import GatePolicy
from shared.gates.schema import signature_view
from shared.gates.spark import SummaryRequest
from shared.gates.summaries import HoldoutSummary
from shared.registry.client import VersionInfo

log = logging.getLogger("gatehouse.run_gates")
# Summarises a holdout table (a local Spark session, or a Databricks job); the second argument
# is the gate request's key, so a redelivered request reuses the job it started.
Summariser = Callable[[SummaryRequest, str], HoldoutSummary]
LATENCY_ROWS = 64


def gather_inputs(registry, policy: GatePolicy, model_name: str, version: str,
                  candidate: VersionInfo, champion: VersionInfo | None) -> SuiteInputs:
    """Everything the pure suite needs on `version` of `model_name` (named as the request named
    them). Missing or unfit evaluation data is a `data_error` the suite reports, not an
    exception."""
    inputs = registry_facts(registry, model_name, version, candidate, champion)
    try:
        holdout, reference, reference_error = read_data(policy, model_name)
        features = features_for(holdout, inputs.candidate_signature, policy)
    except EvaluationDataError as exc:
        return replace(inputs, data_error=str(exc))
    inputs = replace(inputs, holdout=holdout.drop(columns=[policy.label_column]),
                     feature_columns=features, reference=reference,
                     reference_error=reference_error,
                     sensitive=(holdout[policy.sensitive_column].to_numpy()
                                if policy.sensitive_column else None),
                     calibration_rows=(holdout[split_column].to_numpy(dtype=bool)
                                       if (split_column := policy.conformal.split_column)
                                       else None))
    candidate_model = registry.load_pyfunc(model_name, inputs.version)
    inputs = with_candidate_predictions(inputs, candidate_model, holdout, features, policy)
    if inputs.data_error is not None:
        return inputs
    champion_model, champion_features = None, None
    if champion is not None:
        champion_model = registry.load_pyfunc(model_name, champion.version)
        champion_features, outputs = champion_predictions(champion_model, holdout, inputs, policy)
        inputs = replace(inputs, champion=outputs)
    if policy.latency.enabled and inputs.candidate.error is None:
        champion_latency = None
        if (champion_features is not None and inputs.champion is not None
                and inputs.champion.error is None):
            champion_latency = latency(champion_model, holdout[champion_features], policy)
        inputs = replace(inputs, champion_latency=champion_latency,
                         candidate_latency=latency(candidate_model, holdout[features], policy))
    return inputs


def gather_summarised(registry, policy: GatePolicy, model_name: str, version: str,
                      candidate: VersionInfo, champion: VersionInfo | None,
                      summarise: Summariser | None, key: str) -> SuiteInputs:
    """The registry's facts and the summary of the holdout table (`evaluation.table`), scored
    and summarised on Spark; the champion is not scored there (see shared/gates/spark.py)."""
    inputs = registry_facts(registry, model_name, version, candidate, champion)
    data = policy.evaluation
    if summarise is None:
        return replace(inputs, data_error="a holdout table needs Spark: set "
                                          "GATEHOUSE_SPARK_REMOTE or a Databricks workspace")
    request = SummaryRequest(
        candidate.uri, str(policy.resolved_path(data.table, model_name)),
        policy.model_dump(mode="json", by_alias=True), data.table_format,
        policy.resolved_path(data.reference_table, model_name), data.reference_table_format)
    try:
        summary = summarise(request, key)
    except EvaluationDataError as exc:
        return replace(inputs, data_error=str(exc))
    return replace(inputs, summary=summary, class_names=list(summary.class_names))


def registry_facts(registry, model_name: str, version: str, candidate: VersionInfo,
                   champion: VersionInfo | None) -> SuiteInputs:
    """Signatures, lineage tags and versions: what the suite knows before reading any data."""
    run_tags = {}
    if candidate.run_id:
        try:
            run_tags = registry.run_tags(candidate.run_id)
        except Exception as exc:  # a deleted source run: lineage then reports what is missing
            log.warning("run %s of %s/%s not readable: %s", candidate.run_id, model_name,
                        version, exc)
    return SuiteInputs(
        model_name=model_name, version=version,
        champion_version=champion.version if champion else None,
        candidate_signature=registry.signature(model_name, version),
        champion_signature=(registry.signature(model_name, champion.version)
                            if champion else None),
        run_id=candidate.run_id, version_tags=dict(candidate.tags), run_tags=run_tags)


def read_data(policy: GatePolicy, model_name: str):
    """(holdout, reference, reference error); EvaluationDataError when the holdout is missing or
    does not fit the policy. A reference that cannot be read fails the drift gate only."""
    data = policy.evaluation
    path = policy.resolved_path(data.path, model_name)
    if not path:
        raise EvaluationDataError("no evaluation dataset configured (gates.evaluation.path)")
    holdout = evaluation.read_table(path, data.format)
    for role, column in (("label", policy.label_column), ("sensitive", policy.sensitive_column),
                         ("conformal split", policy.conformal.split_column)):
        if column and column not in holdout.columns:
            raise EvaluationDataError(
                f"{path}: no {role} column {column!r} (columns: {list(holdout.columns)[:20]})")
    reference_path = policy.resolved_path(data.reference_path, model_name)
    if reference_path is None or not policy.drift.enabled:
        return holdout, None, None
    try:
        reference = evaluation.read_table(reference_path, data.reference_format)
    except EvaluationDataError as exc:
        return holdout, None, str(exc)
    return holdout, reference.drop(columns=[policy.label_column], errors="ignore"), None


def features_for(holdout, signature, policy: GatePolicy) -> list[str]:
    view = signature_view(signature)
    features = evaluation.feature_columns(holdout, view.input_names if view else None,
                                          policy.evaluation.feature_columns, policy.label_column,
                                          policy.sensitive_column)
    return [c for c in features if c != policy.conformal.split_column]


def with_candidate_predictions(inputs: SuiteInputs, model, holdout, features: list[str],
                               policy: GatePolicy) -> SuiteInputs:
    """The candidate's outputs and the labels in its terms (class indices in its class order, or
    numeric targets); a `data_error` when the labels do not fit the model."""
    outputs, classes = predict(model, holdout[features], policy)
    labels = holdout[policy.label_column].to_numpy()
    if policy.task == "regression":
        try:
            labels = labels.astype(float)
        except (TypeError, ValueError):
            return replace(inputs, data_error=f"label column {policy.label_column!r} is not "
                                              f"numeric, as a regression needs")
        return replace(inputs, labels=labels, class_names=None, candidate=outputs)
    scores = outputs.scores
    if outputs.error is not None or scores is None:  # a classifier's outputs are one or the other
        return replace(inputs, labels=labels, class_names=None, candidate=outputs)
    width = 2 if scores.ndim == 1 else scores.shape[1]
    try:
        labels, class_names = evaluation.encode_labels(labels, classes, width)
    except EvaluationDataError as exc:
        return replace(inputs, data_error=str(exc))
    return replace(inputs, labels=labels, class_names=class_names,
                   candidate=as_scores(outputs, classes, class_names, policy.task))


def champion_predictions(model, holdout, inputs: SuiteInputs,
                         policy: GatePolicy) -> tuple[list[str] | None, ModelOutputs]:
    """(the champion's feature columns, its outputs in the candidate's class order)."""
    try:
        features = features_for(holdout, inputs.champion_signature, policy)
        outputs, classes = predict(model, holdout[features], policy)
    except EvaluationDataError as exc:
        return None, ModelOutputs(error=str(exc))
    if inputs.class_names:
        outputs = as_scores(outputs, classes, inputs.class_names, policy.task)
    return features, outputs


def predict(model, features, policy: GatePolicy) -> tuple[ModelOutputs, list | None]:
    """(ModelOutputs, class names) for one model; prediction errors are the model's result."""
    try:
        if policy.task == "regression":
            return evaluation.regression_outputs(model, features, policy.conformal), None
        probabilities, classes = evaluation.classifier_probabilities(model, features)
        return ModelOutputs(scores=probabilities), classes
    except Exception as exc:  # any failure to predict is reported as the model's failure
        return ModelOutputs(error=f"{type(exc).__name__}: {str(exc)[:500]}"), None


def as_scores(outputs: ModelOutputs, classes, class_names, task: str) -> ModelOutputs:
    """Classifier probabilities in the candidate's class order, binary ones as P(positive)."""
    scores = outputs.scores
    if outputs.error is not None or task == "regression" or scores is None:
        return outputs
    try:
        if scores.ndim == 2:
            scores = evaluation.align_probabilities(scores, classes, class_names)
        return ModelOutputs(scores=evaluation.positive_scores(scores, task))
    except ValueError as exc:
        return ModelOutputs(error=str(exc))


def latency(model, features, policy: GatePolicy) -> LatencyStats:
    rows = [features.iloc[[i]] for i in range(min(len(features), LATENCY_ROWS))]
    return measure_latency(model.predict, rows, policy.latency.warmup_requests,
                           policy.latency.requests)
