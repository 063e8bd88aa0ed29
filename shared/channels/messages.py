"""What is worth telling people about, and how to say it (pure: no I/O).

Facts carry what the channels need besides words: `endpoint`, `alert_kind`, `alert_status`,
`alert_fingerprint`, `report_run_id`, `registry` (read in shared/channels/base.py, dispatch.py
and the channel modules). Links to the MLflow UI are added at delivery, where the UI's address
is known.
"""

from __future__ import annotations

from shared import events
from shared.events import Envelope

NOTIFY_SOURCE = "/gatehouse/router"

Message = tuple[str, str, events.Severity, dict[str, str]]  # title, text, severity, extra facts


def _number(value: float) -> str:
    return f"{value:.4g}"


def _figures(values: dict[str, float]) -> dict[str, str]:
    return {name: _number(value) for name, value in sorted(values.items())}


def is_automatic_actor(actor: str) -> bool:
    """Gatehouse itself (the judge, a monitor) as opposed to a person."""
    return actor == "gatehouse" or actor.startswith("gatehouse:")


def is_automatic(decision: events.Decision) -> bool:
    return is_automatic_actor(decision.actor)


def rollback_request_severity(actor: str) -> events.Severity:
    """Gatehouse's own rollback is an error (it pages by default); a person's is a warning: they
    know already, so by default nobody is paged for it and nothing needs resolving after."""
    return "error" if is_automatic_actor(actor) else "warning"


def _registry_message(data: events.Payload) -> tuple[str, str, events.Severity] | None:
    """(title, text, severity) for a registry event worth telling people about."""
    match data:
        case events.RegisteredModelCreated():
            return (f"New registered model {data.model_name}",
                    f"{data.model_name} was registered in the {data.registry} registry.", "info")
        case events.ModelVersionCreated():
            origin = f" from run {data.run_id}" if data.run_id else ""
            return (f"{data.model_name} v{data.version} registered",
                    f"Version {data.version} of {data.model_name} was created{origin}; "
                    f"it will go through the gate suite.", "info")
        case events.ModelVersionAliasCreated():
            return (f"{data.model_name} @{data.alias} -> v{data.version}",
                    f"Alias @{data.alias} of {data.model_name} now points at version "
                    f"{data.version}.", "info")
        case events.ModelVersionAliasDeleted():
            # @challenger goes after every promotion or refused re-run; @champion going is news.
            return (f"{data.model_name} @{data.alias} removed",
                    f"Alias @{data.alias} was removed from {data.model_name}.",
                    "warning" if data.alias == "champion" else "info")
        case events.ModelVersionStageTransitioned():
            return (f"{data.model_name} v{data.version} -> {data.to_stage}",
                    f"Version {data.version} of {data.model_name} moved from "
                    f"{data.from_stage or 'None'} to {data.to_stage}.", "info")
        case events.StageTransitionRequested():
            return (f"Transition requested: {data.model_name} v{data.version} -> {data.to_stage}",
                    f"Someone asked to move version {data.version} of {data.model_name} "
                    f"to {data.to_stage}.", "info")
    return None  # tag changes and comments are recorded, not announced


def _gate_line(gate: events.GateOutcome) -> str:
    figures = ""
    if gate.observed is not None and gate.threshold is not None:
        figures = f" ({_number(gate.observed)} vs {_number(gate.threshold)})"
    elif gate.observed is not None:
        figures = f" ({_number(gate.observed)})"
    detail = f": {gate.detail}" if gate.detail else ""
    return f"{gate.name} {gate.status}{figures}{detail}"


def _gates_text(data: events.GatesPassed | events.GatesFailed) -> str:
    counts: dict[str, int] = {}
    for gate in data.gates:
        counts[gate.status] = counts.get(gate.status, 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    lines = [data.decision.reason]
    if summary:
        lines.append(f"Gates: {summary}.")
    failing = [g for g in data.gates if g.status in ("fail", "warn", "inconclusive")]
    lines.extend(f"- {_gate_line(gate)}" for gate in failing)
    return "\n".join(lines)


def _not_passed(gates: list[events.GateOutcome]) -> str:
    """'failed its gates', or, when no blocking gate failed but one could not decide, what
    that means: the evidence is too thin, not the model bad."""
    blocking = [g.status for g in gates if g.blocking]
    if "fail" not in blocking and "inconclusive" in blocking:
        return "is inconclusive: the holdout is too small to decide its gates"
    return "failed its gates"


def _decision_facts(decision: events.Decision) -> dict[str, str]:
    return {"decided by": decision.actor, **_figures(decision.metrics)}


def _internal_message(data: events.Payload) -> Message | None:
    match data:
        case events.GatesPassed():
            return (f"{data.model_name} v{data.version} passed its gates", _gates_text(data),
                    "info", {**_decision_facts(data.decision), **_report(data.report_run_id)})
        case events.GatesFailed():
            return (f"{data.model_name} v{data.version} {_not_passed(data.gates)}",
                    _gates_text(data), "warning",
                    {**_decision_facts(data.decision), **_report(data.report_run_id)})
        case events.CanaryStarted():
            champion = (f" alongside champion v{data.champion_version}"
                        if data.champion_version else "")
            return (f"{data.model_name} v{data.version} canary at "
                    f"{_number(data.traffic_percent)}% on {data.endpoint}",
                    f"Version {data.version} now serves {_number(data.traffic_percent)}% of "
                    f"{data.endpoint}{champion}. {data.decision.reason}", "info",
                    {"endpoint": data.endpoint, "traffic": f"{_number(data.traffic_percent)}%",
                     **_decision_facts(data.decision)})
        case events.TrafficRamped():
            return (f"{data.model_name} v{data.version} ramped to {_number(data.to_percent)}% "
                    f"on {data.endpoint}",
                    f"Traffic to version {data.version} went from {_number(data.from_percent)}% "
                    f"to {_number(data.to_percent)}%. {data.decision.reason}", "info",
                    {"endpoint": data.endpoint, "traffic": f"{_number(data.to_percent)}%",
                     **_decision_facts(data.decision)})
        case events.ModelPromoted():
            previous = (f"; v{data.previous_champion} stays deployable for a late rollback"
                        if data.previous_champion else "")
            facts = {**_decision_facts(data.decision)}
            if data.endpoint:
                facts["endpoint"] = data.endpoint
            return (f"{data.model_name} v{data.version} promoted to @champion",
                    f"Version {data.version} now takes all traffic{previous}. "
                    f"{data.decision.reason}", "info", facts)
        case events.RollbackRequested():
            automatic = is_automatic(data.decision)
            who = "Gatehouse" if automatic else data.decision.actor
            return (f"Rollback requested: {data.model_name} v{data.version} on {data.endpoint}",
                    f"{who} asked to roll back version {data.version}: {data.decision.reason}",
                    rollback_request_severity(data.decision.actor),
                    {"endpoint": data.endpoint, **_decision_facts(data.decision)})
        case events.RollbackCompleted():
            restored = (f"; v{data.restored_version} serves all traffic again"
                        if data.restored_version else "")
            facts = {"endpoint": data.endpoint, **_decision_facts(data.decision)}
            if data.restored_version:
                facts["restored version"] = data.restored_version
            return (f"Rolled back: {data.model_name} v{data.version} on {data.endpoint}",
                    f"Version {data.version} no longer serves {data.endpoint}{restored}. "
                    f"{data.decision.reason}", "info", facts)
        case events.RolloutStalled():
            return _stall_message(data)
        case events.RetrainingTriggered():
            facts = {**_decision_facts(data.decision)}
            if data.job_run_id:
                facts["job run"] = data.job_run_id
            if data.alert_fingerprint:
                facts["alert_fingerprint"] = data.alert_fingerprint
            return (f"Retraining {data.model_name}", f"Retraining started: {data.reason}",
                    "info", facts)
        case events.MonitoringAlert():
            return _alert_message(data)
    return None


def _stall_message(data: events.RolloutStalled) -> Message:
    eta = data.time_to_decision_seconds
    outlook = (f"At the observed traffic a decision needs about {eta / 3600:.1f} h more."
               if eta is not None else
               "There is no estimate of the time to a decision: too little traffic to go by.")
    then = ("The policy aborts a stalled rollout: it is being rolled back."
            if data.on_stall == "abort" else
            "The policy keeps holding: send more traffic to the endpoint, wait, or roll back "
            "(or promote by hand).")
    facts = {"endpoint": data.endpoint, "traffic": f"{_number(data.traffic_percent)}%",
             "held": f"{data.held_seconds / 60:.0f} min", **_decision_facts(data.decision)}
    if data.challenger_requests_per_minute is not None:
        facts["challenger requests/min"] = f"{data.challenger_requests_per_minute:.1f}"
    return (f"Rollout stalled: {data.model_name} v{data.version} at "
            f"{_number(data.traffic_percent)}% on {data.endpoint}",
            f"No decision after {data.held_seconds / 60:.0f} min at this step: "
            f"{data.decision.reason} {outlook} {then}", "warning", facts)


def _report(run_id: str | None) -> dict[str, str]:
    return {"report_run_id": run_id} if run_id else {}


def _alert_message(alert: events.MonitoringAlert) -> Message:
    where = alert.model_name or alert.endpoint or alert.source
    resolved = alert.status == "resolved"
    facts = {"alert_kind": alert.alert_kind.value, "alert_status": alert.status,
             "alert_fingerprint": alert.fingerprint, "alert source": alert.source,
             **_figures(alert.figures)}
    if alert.endpoint:
        facts["endpoint"] = alert.endpoint
    title = f"{'Resolved' if resolved else alert.severity.capitalize()}: {where}: {alert.title}"
    text = (f"The {alert.alert_kind.value.replace('_', ' ')} alert from {alert.source} "
            f"{'has resolved' if resolved else 'is firing'}: {alert.title}")
    return title, text, ("info" if resolved else alert.severity), facts


def _dedup_key(envelope: Envelope) -> str:
    data = envelope.data
    match data:
        case events.MonitoringAlert():
            return f"{envelope.type}|{data.fingerprint}|{data.status}"
        case events.TrafficRamped():
            return f"{envelope.type}|{envelope.subject}|{data.endpoint}|{_number(data.to_percent)}"
        case events.RetrainingTriggered():
            return f"{envelope.type}|{envelope.subject}|{data.alert_fingerprint or data.reason}"
    endpoint = getattr(data, "endpoint", None) or ""
    return f"{envelope.type}|{envelope.subject}|{getattr(data, 'alias', '')}{endpoint}"


def notification_for(envelope: Envelope) -> events.NotificationRequested | None:
    data = envelope.data
    facts: dict[str, str] = {}
    message = _registry_message(data)
    if message is not None:
        title, text, severity = message
    else:
        internal = _internal_message(data)
        if internal is None:
            return None
        title, text, severity, facts = internal
    registry = getattr(data, "registry", None)
    return events.NotificationRequested(
        title=title, text=text, severity=severity,
        model_name=getattr(data, "model_name", None), version=getattr(data, "version", None),
        about_event_id=envelope.id, about_event_type=envelope.type,
        dedup_key=_dedup_key(envelope),
        facts={**({"registry": registry} if registry else {}), **facts,
               "occurred": envelope.time.isoformat()},
    )
