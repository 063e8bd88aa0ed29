"""Consumes `run-gates`: runs the gate suite on a model version and decides whether it may become
@challenger.

What starts a run:
- `model_version.created` (the router forwards it here): once per model/version, however often
  the event is delivered (idempotency scope "run-gates", key "<model>/<version>").
- a re-run request: a `model_version_tag.set` event whose tags carry `gatehouse.rerun=<value>`.
  Each new value runs the suite again, once (key "<model>/<version>/rerun/<value>"). It arrives
  - from the HTTP route `POST /api/gates/{model}/{version}/run`, which enqueues it on run-gates.
    Optional JSON body: {"rerun_id": "...", "requested_by": "...", "reason": "..."}; the same
    rerun_id is the same request (a retried POST runs once), without one every POST is new.
    202 with the event id; 404 for a version the registry does not have; 400 for a bad body;
    503 when the registry or the queue cannot be reached.
  - or from the registry, when someone sets the tag on the version in MLflow and the router
    forwards `model_version_tag.set` events here.
  Any other tag event is ignored (Gatehouse's own `gatehouse.gates.*` tags never start a run).

What a run does: reads the policy's `gates` section for the model, loads the candidate by version
and the champion by alias `champion`, loads the evaluation data, predicts with both, runs the
suite (shared/gates/suite.py), logs a run under the gate experiment (params, metrics,
report.json, report.md, reliability.png), tags the version with the verdict, the report run and
the decision (who, when, why, the metrics), sets @challenger when every blocking gate passed
(and @champion for a first version when the policy says so), and publishes GatesPassed or
GatesFailed. MLflow is reached through MLFLOW_TRACKING_URI.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import azure.functions as func

from shared.platform.logs import event_log_context
from shared.platform.queues import RUN_GATES

bp = func.Blueprint()
log = logging.getLogger("gatehouse.run_gates")

SCOPE = "run-gates"
SOURCE = "/gatehouse/run-gates"
API_SOURCE = "/gatehouse/api/gates"
RERUN_TAG = "gatehouse.rerun"
RERUN_REASON_TAG = "gatehouse.rerun.reason"
_LATENCY_ROWS = 64


@dataclass(frozen=True)
class GateRequest:
    model_name: str
    version: str
    registry: str
    rerun: str | None = None
    requested_by: str | None = None
    reason: str | None = None

    @property
    def key(self) -> str:
        base = f"{self.model_name}/{self.version}"
        return f"{base}/rerun/{self.rerun}" if self.rerun else base


def gate_request(data) -> GateRequest | None:
    """What an event asks of this handler (pure); None for events it does not act on."""
    from shared.events import ModelVersionCreated, ModelVersionTagSet

    if isinstance(data, ModelVersionCreated):
        return GateRequest(data.model_name, data.version, data.registry)
    if isinstance(data, ModelVersionTagSet) and data.tags.get(RERUN_TAG, "").strip():
        return GateRequest(data.model_name, data.version, data.registry,
                           rerun=data.tags[RERUN_TAG].strip(), requested_by=data.actor,
                           reason=data.tags.get(RERUN_REASON_TAG))
    return None


def handle(body: bytes) -> dict | None:
    from shared.platform import runtime
    from shared.events import Envelope
    from shared.platform.handling import process_once

    envelope = Envelope.from_json(body)
    request = gate_request(envelope.data)
    if request is None:
        log.info("run-gates: %s (%s) asks for no gate run; ignored", envelope.id, envelope.type)
        return None
    result = process_once(runtime.idempotency(), SCOPE, request.key,
                          lambda: evaluate(envelope, request))
    log.info("run-gates %s: %s", request.key, result)
    return result


@bp.queue_trigger(arg_name="msg", queue_name=RUN_GATES, connection="AzureWebJobsStorage")
@event_log_context
def run_gates(msg: func.QueueMessage) -> None:
    handle(msg.get_body())


# ---- the imperative shell -------------------------------------------------------------------

def _predict(model, features, policy, classes_target=None):
    """(ModelOutputs, class names) for one model; prediction errors are the model's result."""
    from shared.gates import evaluation
    from shared.gates.suite import ModelOutputs

    try:
        if policy.task == "regression":
            return evaluation.regression_outputs(model, features, policy.conformal), None
        probabilities, classes = evaluation.classifier_probabilities(model, features)
        return ModelOutputs(scores=probabilities), classes
    except Exception as exc:  # any failure to predict is reported as the model's failure
        return ModelOutputs(error=f"{type(exc).__name__}: {str(exc)[:500]}"), None


def _latency(model, features, policy):
    from shared.gates.latency import measure_latency

    rows = [features.iloc[[i]] for i in range(min(len(features), _LATENCY_ROWS))]
    return measure_latency(model.predict, rows, policy.latency.warmup_requests,
                           policy.latency.requests)


def _read_data(policy, model_name: str):
    """(holdout, feature columns, reference, reference error); EvaluationDataError when the
    holdout is missing or does not fit the policy."""
    from shared.gates import evaluation

    data = policy.evaluation
    path = policy.resolved_path(data.path, model_name)
    if not path:
        raise evaluation.EvaluationDataError("no evaluation dataset configured "
                                             "(gates.evaluation.path)")
    holdout = evaluation.read_table(path, data.format)
    for role, column in (("label", policy.label_column), ("sensitive", policy.sensitive_column)):
        if column and column not in holdout.columns:
            raise evaluation.EvaluationDataError(
                f"{path}: no {role} column {column!r} (columns: {list(holdout.columns)[:20]})")
    reference, reference_error = None, None
    if data.reference_path and policy.drift.enabled:
        try:
            reference = evaluation.read_table(policy.resolved_path(data.reference_path,
                                                                   model_name),
                                              data.reference_format)
            reference = reference.drop(columns=[policy.label_column], errors="ignore")
        except evaluation.EvaluationDataError as exc:
            reference_error = str(exc)
    return holdout, reference, reference_error


def _features_for(holdout, signature, policy) -> list[str]:
    from shared.gates import evaluation
    from shared.gates.schema import signature_view

    view = signature_view(signature)
    return evaluation.feature_columns(holdout, view.input_names if view else None,
                                      policy.evaluation.feature_columns, policy.label_column,
                                      policy.sensitive_column)


def _as_scores(outputs, classes, class_names, task):
    """Classifier probabilities in the candidate's class order, binary ones as P(positive)."""
    from shared.gates import evaluation
    from shared.gates.suite import ModelOutputs

    if outputs.error is not None or task == "regression":
        return outputs
    try:
        scores = outputs.scores
        if scores.ndim == 2:
            scores = evaluation.align_probabilities(scores, classes, class_names)
        return ModelOutputs(scores=evaluation.positive_scores(scores, task))
    except ValueError as exc:
        return ModelOutputs(error=str(exc))


def gather_inputs(registry, request: GateRequest, policy, candidate, champion):
    """Everything the pure suite needs, read from MLflow and the evaluation data."""
    from dataclasses import replace

    from shared.gates import evaluation
    from shared.gates.suite import ModelOutputs, SuiteInputs

    run_tags = {}
    if candidate.run_id:
        try:
            run_tags = registry.run_tags(candidate.run_id)
        except Exception as exc:  # a deleted source run: lineage then reports what is missing
            log.warning("run %s of %s not readable: %s", candidate.run_id, request.key, exc)
    candidate_signature = registry.signature(request.model_name, request.version)
    champion_signature = (registry.signature(request.model_name, champion.version)
                          if champion else None)
    inputs = SuiteInputs(model_name=request.model_name, version=request.version,
                         champion_version=champion.version if champion else None,
                         candidate_signature=candidate_signature,
                         champion_signature=champion_signature, run_id=candidate.run_id,
                         version_tags=dict(candidate.tags), run_tags=run_tags)
    try:
        holdout, reference, reference_error = _read_data(policy, request.model_name)
        features = _features_for(holdout, candidate_signature, policy)
    except evaluation.EvaluationDataError as exc:
        return replace(inputs, data_error=str(exc))
    inputs = replace(inputs, holdout=holdout.drop(columns=[policy.label_column]),
                     feature_columns=features, reference=reference,
                     reference_error=reference_error,
                     sensitive=(holdout[policy.sensitive_column].to_numpy()
                                if policy.sensitive_column else None))

    candidate_model = registry.load_pyfunc(request.model_name, request.version)
    outputs, classes = _predict(candidate_model, holdout[features], policy)
    labels, class_names = holdout[policy.label_column].to_numpy(), None
    if policy.task == "regression":
        try:
            labels = labels.astype(float)
        except (TypeError, ValueError):
            return replace(inputs, data_error=f"label column {policy.label_column!r} is not "
                                              f"numeric, as a regression needs")
    elif outputs.error is None:
        width = 2 if outputs.scores.ndim == 1 else outputs.scores.shape[1]
        try:
            labels, class_names = evaluation.encode_labels(labels, classes, width)
        except evaluation.EvaluationDataError as exc:
            return replace(inputs, data_error=str(exc))
        outputs = _as_scores(outputs, classes, class_names, policy.task)
    inputs = replace(inputs, labels=labels, class_names=class_names, candidate=outputs)

    champion_model, champion_features = None, None
    if champion is not None:
        champion_model = registry.load_pyfunc(request.model_name, champion.version)
        try:
            champion_features = _features_for(holdout, champion_signature, policy)
            theirs, their_classes = _predict(champion_model, holdout[champion_features], policy)
        except evaluation.EvaluationDataError as exc:
            theirs, their_classes = ModelOutputs(error=str(exc)), None
        if class_names:
            theirs = _as_scores(theirs, their_classes, class_names, policy.task)
        inputs = replace(inputs, champion=theirs)

    if policy.latency.enabled and outputs.error is None:
        champion_latency = None
        if champion_features is not None and inputs.champion.error is None:
            champion_latency = _latency(champion_model, holdout[champion_features], policy)
        inputs = replace(inputs, champion_latency=champion_latency,
                         candidate_latency=_latency(candidate_model, holdout[features], policy))
    return inputs


def _params(request: GateRequest, policy, inputs) -> dict:
    from shared.gates.mlflow_report import flatten

    params = flatten("gates", policy.model_dump(mode="json", by_alias=True))
    params = {key: json.dumps(value) if isinstance(value, (list, dict)) else value
              for key, value in params.items() if value is not None}
    params.update({"model_name": request.model_name, "version": request.version,
                   "champion_version": inputs.champion_version or "none",
                   "evaluation_rows": len(inputs.labels) if inputs.labels is not None else 0,
                   "feature_columns": json.dumps(inputs.feature_columns or [])})
    return params


def _metrics(report) -> dict[str, float]:
    import math

    metrics = dict(report.headline)
    for result in report.results:
        if result.observed is not None and math.isfinite(result.observed):
            metrics[f"gates.{result.name}.observed"] = result.observed
        metrics[f"gates.{result.name}.passed"] = 1.0 if result.status == "pass" else 0.0
    return metrics


def evaluate(envelope, request: GateRequest) -> dict:
    from datetime import datetime, timezone

    from mlflow.exceptions import MlflowException

    from shared.platform import runtime
    from shared.events import Decision, GatesFailed, GatesPassed
    from shared.gates import decision, report as rendering
    from shared.gates.mlflow_report import log_report_run, run_url
    from shared.gates.suite import run_suite
    from shared.policy import current_policy
    from shared.registry.client import Registry

    policy = current_policy().for_model(request.model_name).gates
    registry = Registry()
    try:
        candidate = registry.version(request.model_name, request.version)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            log.warning("%s no longer exists; nothing to gate", request.key)
            return {"verdict": None, "skipped": "the version no longer exists"}
        raise
    champion = registry.version_by_alias(request.model_name, "champion")
    if champion is not None and champion.version == candidate.version:
        champion = None  # re-running the champion itself: nothing to compare it with
    challenger = registry.version_by_alias(request.model_name, "challenger")

    inputs = gather_inputs(registry, request, policy, candidate, champion)
    report = run_suite(inputs, policy)
    decided_at = datetime.now(timezone.utc).isoformat()
    context = {"generated_at": decided_at, "event_id": envelope.id,
               "requested_by": request.requested_by, "rerun": request.rerun,
               "rerun_reason": request.reason,
               "evaluation_data": policy.resolved_path(policy.evaluation.path,
                                                       request.model_name)}

    binaries = {}
    if report.candidate_table is not None:
        binaries["reliability.png"] = rendering.reliability_diagram_png(
            report.candidate_table, report.champion_table,
            f"{request.model_name} v{request.version} vs "
            + (f"champion v{report.champion_version}" if report.champion_version
               else "no champion"),
            candidate_label=f"v{request.version}",
            champion_label=f"v{report.champion_version} (champion)")
    experiment, run_id = log_report_run(
        registry.client, policy.experiment, f"{request.model_name} v{request.version}",
        tags={"gatehouse.model": request.model_name, "gatehouse.version": request.version,
              "gatehouse.verdict": report.verdict, "gatehouse.event_id": envelope.id},
        params=_params(request, policy, inputs), metrics=_metrics(report),
        texts={"report.json": rendering.report_json(report, policy, context),
               "report.md": rendering.report_markdown(report, context)},
        binaries=binaries)
    url = run_url(registry.tracking_uri, experiment, run_id)

    plan = decision.plan_promotion(report, policy.first_version_becomes_champion,
                                   challenger.version if challenger else None, run_id, url,
                                   decided_at, request.requested_by)
    registry.set_version_tags(request.model_name, request.version, plan.version_tags)
    for alias in plan.set_aliases:
        registry.set_alias(request.model_name, alias, request.version)
    if plan.remove_challenger:
        registry.delete_alias(request.model_name, "challenger")

    if plan.event_kind == "gates.passed":
        _save_monitoring_reference(request, inputs, run_id, registry)
    event_type = GatesPassed if plan.event_kind == "gates.passed" else GatesFailed
    event = event_type(model_name=request.model_name, registry=request.registry,
                       version=request.version, report_run_id=run_id,
                       gates=[r.to_outcome() for r in report.results],
                       decision=Decision(actor=decision.ACTOR, reason=plan.reason,
                                         metrics=plan.metrics))
    runtime.bus().publish(envelope.derived(event, source=SOURCE))
    return {"verdict": report.verdict, "report_run_id": run_id,
            "aliases": list(plan.set_aliases), "blocking": [r.name for r in report.blocking]}


def _save_monitoring_reference(request, inputs, run_id: str, registry) -> None:
    """The monitor compares live traffic with the data this version was judged on."""
    import numpy as np

    from shared.policy import monitoring_policy_for
    from shared.monitoring.reference import reference_from_frame, save_reference

    if inputs.holdout is None or not inputs.feature_columns:
        return
    monitoring = monitoring_policy_for(request.model_name)
    scores = inputs.candidate.scores
    binary = scores is not None and np.ndim(scores) == 1
    save_reference(reference_from_frame(
        request.model_name, request.version, inputs.holdout[inputs.feature_columns],
        scores=scores if binary else None, labels=inputs.labels if binary else None,
        n_bins=monitoring.n_bins, categorical_columns=monitoring.categorical_columns,
        decision_threshold=monitoring.decision_threshold), run_id=run_id, client=registry.client)


# ---- the re-run request over HTTP -----------------------------------------------------------

def _json_response(status: int, body: dict, headers: dict | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, headers=headers or {},
                             mimetype="application/json")


def parse_rerun_body(body: bytes):
    """The optional JSON body of a re-run request, or a message saying what is wrong."""
    from pydantic import BaseModel, ConfigDict, Field, ValidationError

    class RerunBody(BaseModel):
        model_config = ConfigDict(extra="forbid")
        rerun_id: str | None = Field(None, min_length=1, max_length=64,
                                     pattern=r"^[A-Za-z0-9._-]+$")
        requested_by: str | None = Field(None, min_length=1, max_length=200)
        reason: str | None = Field(None, min_length=1, max_length=1000)

    if not body.strip():
        return RerunBody(), None
    try:
        document = json.loads(body)
    except ValueError as exc:
        return None, f"body is not JSON: {exc}"
    if not isinstance(document, dict):
        return None, "body must be a JSON object"
    try:
        return RerunBody.model_validate(document), None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in exc.errors())
        return None, f"bad body: {problems}"


@bp.route(route="gates/{model}/{version}/run", methods=["POST"])
def request_rerun(req: func.HttpRequest) -> func.HttpResponse:
    """Ask for the gate suite to run again on one version (see the module docstring)."""
    import uuid

    from shared.platform import runtime
    from shared.events import Envelope, ModelVersionTagSet

    model = (req.route_params.get("model") or "").strip()
    version = (req.route_params.get("version") or "").strip()
    if not model or not version.isdigit():
        return _json_response(400, {"error": "the route is /api/gates/<model>/<version>/run with "
                                             "a numeric version"})
    body, problem = parse_rerun_body(req.get_body() or b"")
    if problem:
        return _json_response(400, {"error": problem})

    from mlflow.exceptions import MlflowException

    from shared.registry.client import Registry

    try:
        Registry().version(model, version)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST",
                                              "INVALID_PARAMETER_VALUE"):
            return _json_response(404, {"error": f"no version {version} of model {model!r} in "
                                                 f"the registry"})
        return _json_response(503, {"error": "the model registry cannot be reached"},
                              {"Retry-After": "30"})
    except Exception:  # connection failures: the caller may retry
        log.exception("registry lookup for a re-run of %s/%s failed", model, version)
        return _json_response(503, {"error": "the model registry cannot be reached"},
                              {"Retry-After": "30"})

    rerun_id = body.rerun_id or uuid.uuid4().hex
    tags = {RERUN_TAG: rerun_id}
    if body.reason:
        tags[RERUN_REASON_TAG] = body.reason
    envelope = Envelope.wrap(
        ModelVersionTagSet(model_name=model, version=version, tags=tags,
                           actor=body.requested_by or "api"),
        source=API_SOURCE, dedupe_key=f"{model}/{version}/{rerun_id}")
    try:
        runtime.bus().send(RUN_GATES, envelope)
    except Exception:  # storage down: nothing was accepted, the caller retries
        log.exception("could not enqueue the re-run of %s/%s", model, version)
        return _json_response(503, {"error": "the queue cannot be reached; retry"},
                              {"Retry-After": "10"})
    return _json_response(202, {"event_id": envelope.id, "rerun_id": rerun_id,
                                "queue": RUN_GATES})
