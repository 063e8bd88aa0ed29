"""Gate runs, the imperative shell around the pure suite.

A run reads the policy's `gates` section for the model, the candidate version and the champion
(@champion, unless that is the candidate itself), gathers the evaluation data and both models'
predictions, runs the suite, logs the report run in MLflow, then acts on the plan the decision
made: tags the version with the verdict and why, sets @challenger when every blocking gate passed
(and @champion for a first version when the policy says so; never over a newer version), and
publishes GatesPassed or GatesFailed. The monitoring reference of a version that passed is saved
with its report run. Everything before the report run is read-only, so `evaluate` is the same
suite with no side effects (the CLI's `gates`).

Each effect is idempotent at its target, so a run killed anywhere and redone from the start does
each one once: one report run per request key (reused when finished, replaced when a crash left
it unfinished), tags and aliases written only where the registry differs, and the announcement's
id derived from the request key (the router drops a repeat).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.events import Decision, Envelope, GatesFailed, GatesPassed
from shared.foundation.failpoints import failpoint
from shared.foundation.http import Reply, error_reply, unavailable
from shared.foundation.queues import RUN_GATES
from shared.gates import decision, evidence
from shared.gates.decision import PromotionPlan
from shared.gates.gathering import Summariser, gather_inputs, gather_summarised
from shared.gates.inputs import SuiteInputs
from shared.gates.policy import GatePolicy
from shared.gates.request import GateRequest, RerunBody, rerun_event
from shared.gates.spark import SummaryRequest
from shared.gates.spark_job import DatabricksSummaryJob
from shared.gates.suite import SuiteReport, run_suite
from shared.gates.summaries import HoldoutSummary
from shared.registry.client import VersionInfo

log = logging.getLogger("gatehouse.run_gates")
SOURCE = "/gatehouse/run-gates"
MISSING = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")  # how MLflow says "no such"


@dataclass(frozen=True)
class Evaluation:
    """One suite run and what it ran with."""

    policy: GatePolicy
    inputs: SuiteInputs
    report: SuiteReport


class GateService:
    def __init__(self, registry, bus, policy_for: Callable[[str], GatePolicy],
                 clock: Callable[[], float] = time.time, summarise: Summariser | None = None):
        self.registry, self.bus, self.policy_for, self.clock = registry, bus, policy_for, clock
        self.summarise = summarise  # for a holdout table: local Spark or the Databricks job

    # -- judging ---------------------------------------------------------------------------------

    def evaluate(self, model_name: str, version: str) -> Evaluation | None:
        """The suite on one version, nothing written anywhere; None when the registry has no
        such version."""
        candidate = self._candidate(model_name, version)
        return None if candidate is None else self._evaluate(model_name, version, candidate)

    def _candidate(self, model_name: str, version: str) -> VersionInfo | None:
        from mlflow.exceptions import MlflowException

        try:
            return self.registry.version(model_name, version)
        except MlflowException as exc:
            if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    def _champion(self, model_name: str, candidate: VersionInfo) -> VersionInfo | None:
        """@champion, unless the candidate is the champion (a re-run): nothing to compare with."""
        champion = self.registry.version_by_alias(model_name, "champion")
        return None if champion is not None and champion.version == candidate.version else champion

    def _evaluate(self, model_name: str, version: str, candidate: VersionInfo,
                  policy: GatePolicy | None = None, key: str | None = None) -> Evaluation:
        policy = policy or self.policy_for(model_name)
        champion = self._champion(model_name, candidate)
        if policy.evaluation.table:
            inputs = gather_summarised(self.registry, policy, model_name, version, candidate,
                                       champion, self.summarise, key or f"{model_name}/{version}")
        else:
            inputs = gather_inputs(self.registry, policy, model_name, version, candidate,
                                   champion)
        return Evaluation(policy, inputs, run_suite(inputs, policy))

    # -- a gate run ------------------------------------------------------------------------------

    def run(self, envelope: Envelope, request: GateRequest) -> dict[str, Any]:
        """Judge the version, record the report, act on the decision; the handler's result.

        Safe to redo from the start after a crash at any point: the report run is found by the
        request's key (a finished one is reused, verdict and all), tags and aliases are written
        only where the registry differs, and the announcement's id follows from the key."""
        model, version = request.model_name, request.version
        candidate = self._candidate(model, version)
        if candidate is None:
            log.warning("%s no longer exists; nothing to gate", request.key)
            return {"verdict": None, "skipped": "the version no longer exists"}
        policy = self.policy_for(model)
        recorded = evidence.recorded_report(self.registry, policy, request.key)
        if recorded is None:
            recorded = self._judge_and_record(envelope, request, policy, candidate)
        else:
            log.info("%s: report run %s is recorded already; acting on it", request.key,
                     recorded.run_id)
        failpoint("gates.report_logged")
        report, run_id = recorded.report, recorded.run_id
        champion = self.registry.version_by_alias(model, "champion")
        challenger = self.registry.version_by_alias(model, "challenger")
        plan = decision.plan_promotion(
            report, policy.first_version_becomes_champion,
            challenger.version if challenger else None, run_id, recorded.url,
            recorded.decided_at, request.requested_by,
            current_champion=champion.version if champion else None)
        self._apply(request, plan)
        self.bus.publish(Envelope.wrap(self._announcement(request, report, plan, run_id),
                                       source=SOURCE, dedupe_key=f"gates|{request.key}"))
        failpoint("gates.published")
        return {"verdict": report.verdict, "report_run_id": run_id,
                "aliases": list(plan.set_aliases), "blocking": [r.name for r in report.blocking]}

    def _judge_and_record(self, envelope: Envelope, request: GateRequest, policy: GatePolicy,
                          candidate: VersionInfo) -> evidence.RecordedReport:
        """Run the suite and log its report run (with the monitoring reference of a version
        that passed, saved before the run counts as finished)."""
        evaluation = self._evaluate(request.model_name, request.version, candidate, policy,
                                    request.key)
        inputs, report, decided_at = evaluation.inputs, evaluation.report, self._now()

        def save_reference(run_id: str) -> None:
            if report.verdict == "passed":
                self._save_monitoring_reference(inputs, run_id)
                failpoint("gates.reference_saved")

        run_id, url = evidence.record_report(
            self.registry, policy, inputs, report,
            self._report_context(envelope, request, policy, decided_at), envelope.id,
            request.key, before_finish=save_reference)
        return evidence.RecordedReport(report, decided_at, run_id, url)

    def _now(self) -> str:
        return datetime.fromtimestamp(self.clock(), UTC).isoformat()

    @staticmethod
    def _report_context(envelope: Envelope, request: GateRequest, policy: GatePolicy,
                        decided_at: str) -> dict[str, Any]:
        """Who asked, when and on what data: the head of report.json and report.md."""
        return {"generated_at": decided_at, "event_id": envelope.id,
                "requested_by": request.requested_by, "rerun": request.rerun,
                "rerun_reason": request.reason,
                "evaluation_data": policy.resolved_path(
                    policy.evaluation.path or policy.evaluation.table, request.model_name)}

    def _apply(self, request: GateRequest, plan: PromotionPlan) -> None:
        model, version = request.model_name, request.version
        self.registry.set_version_tags(model, version, plan.version_tags)
        failpoint("gates.tags_written")
        for alias in plan.set_aliases:
            self.registry.set_alias(model, alias, version)
        if plan.remove_challenger:
            self.registry.delete_alias(model, "challenger")
        failpoint("gates.alias_set")

    def _save_monitoring_reference(self, inputs: SuiteInputs, run_id: str) -> None:
        """The monitor compares live traffic with the data this version was judged on."""
        import numpy as np

        from shared.monitoring.reference import reference_from_frame, save_reference
        from shared.policy import monitoring_policy_for

        if inputs.holdout is None or not inputs.feature_columns:
            return
        monitoring = monitoring_policy_for(inputs.model_name)
        scores = inputs.candidate.scores
        binary = scores is not None and np.ndim(scores) == 1
        save_reference(reference_from_frame(
            inputs.model_name, inputs.version, inputs.holdout[inputs.feature_columns],
            scores=scores if binary else None, labels=inputs.labels if binary else None,
            n_bins=monitoring.n_bins, categorical_columns=monitoring.categorical_columns,
            decision_threshold=monitoring.decision_threshold),
            run_id=run_id, client=self.registry.client)

    @staticmethod
    def _announcement(request: GateRequest, report: SuiteReport, plan: PromotionPlan,
                      run_id: str) -> GatesPassed | GatesFailed:
        event_type = GatesPassed if plan.event_kind == "gates.passed" else GatesFailed
        return event_type(model_name=request.model_name, registry=request.registry,
                          version=request.version, report_run_id=run_id,
                          gates=[r.to_outcome() for r in report.results],
                          decision=Decision(actor=decision.ACTOR, reason=plan.reason,
                                            metrics=plan.metrics))

    # -- a re-run request ------------------------------------------------------------------------

    def request_rerun(self, model_name: str, version: str, body: RerunBody) -> Reply:
        """Enqueue a re-run of the suite on a version the registry has: 202 with the event id,
        404 for an unknown version, 503 (with Retry-After) when the registry or the queue
        cannot be reached."""
        problem = self._lookup(model_name, version)
        if problem is not None:
            return problem
        rerun_id = body.rerun_id or uuid.uuid4().hex
        envelope = rerun_event(model_name, version, rerun_id, body)
        try:
            self.bus.send(RUN_GATES, envelope)
        except Exception:  # storage down: nothing was accepted, the caller retries
            log.exception("could not enqueue the re-run of %s/%s", model_name, version)
            return unavailable("the queue cannot be reached; retry", retry_after=10)
        return Reply(202, {"event_id": envelope.id, "rerun_id": rerun_id, "queue": RUN_GATES})

    def _lookup(self, model_name: str, version: str) -> Reply | None:
        """None when the registry has the version; the reply saying why not otherwise."""
        from mlflow.exceptions import MlflowException

        unreachable = unavailable("the model registry cannot be reached", retry_after=30)
        try:
            self.registry.version(model_name, version)
        except MlflowException as exc:
            if getattr(exc, "error_code", "") in MISSING:
                return error_reply(404, f"no version {version} of model {model_name!r} in the "
                                        f"registry")
            return unreachable
        except Exception:  # connection failures: the caller may retry
            log.exception("registry lookup for a re-run of %s/%s failed", model_name, version)
            return unreachable
        return None


def from_runtime() -> GateService:
    """The service as the Function App's handlers use it, built from the settings."""
    from shared.foundation import runtime
    from shared.policy import current_policy
    from shared.registry.client import Registry

    return GateService(Registry(), runtime.bus(),
                       lambda model: current_policy().for_model(model).gates,
                       summarise=summariser(runtime.settings()))


def summariser(settings) -> Summariser | None:
    """How a holdout table is summarised: a Spark Connect session (GATEHOUSE_SPARK_REMOTE), else
    a one-time Databricks job when a workspace is configured, else not at all."""
    if settings.spark_remote:
        return LocalSpark(settings.spark_remote)
    if settings.databricks_host and settings.gates_job_script:
        return DatabricksSummaryJob.from_settings(settings)
    return None


@dataclass(frozen=True)
class LocalSpark:
    """Summarise on a Spark Connect session in this process (a local Spark, or a server)."""

    remote: str

    def __call__(self, request: SummaryRequest, key: str) -> HoldoutSummary:
        from shared.gates.spark import run_request, session

        return run_request(session(self.remote), request)
