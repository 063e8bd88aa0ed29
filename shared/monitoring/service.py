"""The monitor's imperative shell: read the windows not judged yet, judge them (monitor.py),
publish the alerts, log every figure to MLflow, remember where it stopped.

Windows are aligned to the epoch (window w covers [w*W, (w+1)*W), W = the default policy's
`window_seconds`), so every host cuts the same windows. Per endpoint the state table keeps the
last judged window and, per served version, which metrics are in the alert state. Alerts are
published before the state is saved, with ids derived from (fingerprint, status, window): a run
that dies in between is repeated by the next one and its alerts are dropped as repeats; of two
hosts judging the same windows, one saves and both publish the same ids.

The monitor timer only fans out (shared/foundation/fanout.py): `Monitor.due` lists the endpoints
with traffic to judge, one tick each goes on the `monitor-ticks` queue, and a worker on any
instance judges one endpoint with `Monitor.tick`, reading only that endpoint's traffic.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Protocol

from shared.events import Envelope
from shared.foundation.fanout import Send, TickMarks, fan_out
from shared.foundation.queues import MONITOR_TICKS
from shared.foundation.state import ConcurrencyConflict, StateTable, Table, safe_row_key
from shared.monitoring.monitor import (
    MetricState,
    alert_for,
    evaluate_summary,
    judge,
)
from shared.monitoring.policy import METRICS, MonitoringPolicy
from shared.monitoring.reference import ReferenceDistribution
from shared.monitoring.summary import Lens, Plan, Summaries, window_bounds, window_index

log = logging.getLogger("gatehouse.monitor")
TABLE = "gatehousemonitor"
PARTITION = "endpoints"
EVENT_SOURCE = "/gatehouse/monitor"
RUN_TAG = "gatehouse.monitor.endpoint"


@dataclass
class EndpointState:
    endpoint: str
    last_window: int | None = None
    states: dict[str, dict[str, MetricState]] = field(default_factory=dict)
    etag: str | None = None


class MonitorStateStore:
    def __init__(self, table: Table):
        self.table = table

    @classmethod
    def connect(cls, connection_string: str) -> MonitorStateStore:
        return cls(StateTable(connection_string, TABLE))

    def load(self, endpoint: str) -> EndpointState:
        row = self.table.get(PARTITION, safe_row_key(endpoint))
        if row is None:
            return EndpointState(endpoint)
        states = {version: {metric: MetricState(**value) for metric, value in metrics.items()}
                  for version, metrics in json.loads(row.properties["states"]).items()}
        return EndpointState(endpoint, int(row.properties["last_window"]), states, row.etag)

    def last_windows(self) -> dict[str, int]:
        """The last judged window of every endpoint judged so far."""
        return {row.properties["endpoint"]: int(row.properties["last_window"])
                for row in self.table.rows(PARTITION)}

    def save(self, state: EndpointState) -> None:
        properties = {"endpoint": state.endpoint, "last_window": state.last_window,
                      "states": json.dumps({v: {m: vars(s) for m, s in metrics.items()}
                                            for v, metrics in state.states.items()})}
        row = safe_row_key(state.endpoint)
        if state.etag is None:
            self.table.insert(PARTITION, row, properties)
        else:
            self.table.replace(PARTITION, row, properties, state.etag)


class MlflowMonitorLog:
    """Every figure as an MLflow metric time series: one run per endpoint (tagged
    gatehouse.monitor.endpoint), key `v<version>/<figure>`, step = the window index."""

    def __init__(self, experiment: str, tracking_uri: str | None = None):
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.experiment = experiment
        self._runs: dict[str, str] = {}

    def _experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        from mlflow.exceptions import MlflowException

        try:
            return self.client.create_experiment(self.experiment)
        except MlflowException:  # created concurrently
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                raise
            return found.experiment_id

    def run_id(self, endpoint: str) -> str:
        if endpoint not in self._runs:
            experiment_id = self._experiment_id()
            safe = endpoint.replace("'", "")
            runs = self.client.search_runs([experiment_id], f"tags.`{RUN_TAG}` = '{safe}'",
                                           max_results=1, order_by=["attributes.start_time ASC"])
            if runs:
                self._runs[endpoint] = runs[0].info.run_id
            else:
                run = self.client.create_run(experiment_id, run_name=f"monitor-{endpoint}",
                                             tags={RUN_TAG: endpoint})
                self._runs[endpoint] = run.info.run_id
        return self._runs[endpoint]

    def log(self, endpoint: str, version: str | None, window: int, at: float,
            figures: dict[str, float]) -> None:
        import math

        from mlflow.entities import Metric

        prefix = f"v{version}" if version else "unversioned"
        metrics = [Metric(f"{prefix}/{name}", float(value), int(at * 1000), window)
                   for name, value in sorted(figures.items()) if math.isfinite(value)]
        run_id = self.run_id(endpoint)
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(run_id, metrics=metrics[start:start + 1000])


class Traffic(Protocol):
    def summaries(self, endpoint: str, since: float, until: float, width: float, plan: Plan,
                  label_keys: Collection[str] = ()) -> Summaries: ...
    def endpoints(self, since: float, until: float) -> set[str]: ...


class LabelReader(Protocol):
    def labelled_endpoints(self) -> set[str]: ...
    def since(self, endpoint: str, since: float) -> dict[str, float]: ...


class NoLabels:
    def labelled_endpoints(self) -> set[str]:
        return set()

    def since(self, endpoint: str, since: float) -> dict[str, float]:
        return {}


@dataclass(frozen=True)
class Due:
    """What a monitor round has to judge: the endpoints, which of them have late labels, and
    the windows up to `last` (of `width` seconds)."""

    endpoints: list[str]
    labelled: set[str]
    first: int
    last: int
    width: float


@dataclass
class Monitor:
    """What the monitor needs; every collaborator is a small adapter (or a fake in tests).

    `due(now)` says which endpoints a round covers (the timer fans out one tick each), `tick`
    judges one endpoint's unjudged windows, `run` does a whole round in this process."""

    traffic: Traffic
    states: MonitorStateStore
    publish: Callable[[Envelope], object]
    policy_for: Callable[[str | None], MonitoringPolicy]
    reference_for: Callable[[str, str], ReferenceDistribution | None] = (
        lambda model, version: None)
    labels: LabelReader = field(default_factory=NoLabels)
    metrics_log: MlflowMonitorLog | None = None

    def _windows(self, now: float) -> tuple[int, int, float]:
        defaults = self.policy_for(None)
        width = defaults.window_seconds
        last_complete = window_index(now, width) - 1
        return last_complete - defaults.max_catch_up_windows + 1, last_complete, width

    def due(self, now: float) -> Due:
        first, last, width = self._windows(now)
        # Look only where some endpoint still has to judge: a new endpoint starts at the latest
        # complete window, a known one after the last window it judged.
        pending = [w + 1 for w in self.states.last_windows().values() if w < last]
        earliest = max(first, min(pending, default=last))
        since, until = window_bounds(earliest, width)[0], window_bounds(last, width)[1]
        endpoints = sorted(self.traffic.endpoints(since, until))
        labelled = self.labels.labelled_endpoints() & set(endpoints) if endpoints else set()
        return Due(endpoints, labelled, first, last, width)

    def run(self, now: float) -> dict:
        due = self.due(now)
        endpoints: dict[str, dict] = {}
        summary = {"windows_up_to": due.last, "window_seconds": due.width,
                   "endpoints": endpoints}
        for endpoint in due.endpoints:
            endpoints[endpoint] = self.tick(endpoint, now, endpoint in due.labelled)
        return summary

    def tick(self, endpoint: str, now: float, labelled: bool) -> dict:
        """Judge the endpoint's windows not judged yet, up to the last complete one at `now`:
        one read of its traffic, and (when it has labels) one of the labels stored since."""
        first, last, width = self._windows(now)
        state = self.states.load(endpoint)
        start = max(first, (state.last_window + 1) if state.last_window is not None else last)
        if start > last:
            return {"windows": [], "alerts": []}
        since, until = window_bounds(start, width)[0], window_bounds(last, width)[1]
        labels = self.labels.since(endpoint, since) if labelled else {}
        summaries = self.traffic.summaries(endpoint, since, until, width, self._lens, labels)
        return self._endpoint(endpoint, state, summaries, labels, start, last, width)

    def _lens(self, model_name: str | None, version: str) -> Lens | None:
        """How a version's windows are summarised (None: its model is not monitored)."""
        policy = self.policy_for(model_name)
        if not policy.enabled:
            return None
        reference = self.reference_for(model_name, version) if model_name else None
        return Lens(reference, policy.decision_threshold)

    def _endpoint(self, endpoint: str, state: EndpointState, summaries: Summaries,
                  labels: dict[str, float], start: int, last: int, width: float) -> dict:
        models = {version: s.model_name for (_, version), s in sorted(summaries.items())
                  if s.model_name}
        published, windows = [], []
        for (window, version), summary in sorted(summaries.items()):
            if not start <= window <= last:
                continue
            model_name = models.get(version)
            policy = self.policy_for(model_name)
            reference = self.reference_for(model_name, version) if model_name else None
            result = evaluate_summary(summary, version, window, reference, labels, policy)
            before = state.states.get(version, {})
            after, changes = judge(before, result.judged, policy, window)
            state.states[version] = after
            for change in changes:
                alert = alert_for(change, result, endpoint=endpoint, model_name=model_name,
                                  policy=policy)
                self.publish(Envelope.wrap(alert, source=EVENT_SOURCE,
                                           dedupe_key=f"{alert.fingerprint}|{alert.status}"
                                                      f"|{window}"))
                published.append({"window": window, "version": version,
                                  "metric": change.metric, "status": change.status,
                                  "value": change.value})
            if self.metrics_log is not None:
                alerting = {f"alert.{m}": float(after.get(m, MetricState()).alerting)
                            for m in METRICS if m in result.judged or m in after}
                self.metrics_log.log(endpoint, version, window, window_bounds(window, width)[1],
                                     {**result.figures, **alerting})
            windows.append({"window": window, "version": version,
                            "reference": reference is not None,
                            "figures": {k: round(v, 6) for k, v in result.figures.items()}})
        state.last_window = last
        try:
            self.states.save(state)
        except ConcurrencyConflict:
            log.info("%s: another host judged these windows too; its state stands", endpoint)
        for entry in published:
            log.info("%s v%s window %s: %s %s (%.4g)", endpoint, entry["version"],
                     entry["window"], entry["metric"], entry["status"], entry["value"])
        return {"windows": windows, "alerts": published}


def enqueue_ticks(monitor: Monitor, now: float, marks: TickMarks, send: Send) -> list[str]:
    """The monitor timer's round: one tick per endpoint due, on the monitor-ticks queue."""
    due = monitor.due(now)
    return fan_out("monitor", MONITOR_TICKS, due.endpoints, now, due.width, marks, send,
                   labelled=due.labelled)
