"""What is worth telling people about, and how to say it (pure: no I/O)."""

from __future__ import annotations

from shared import events
from shared.events import Envelope

NOTIFY_SOURCE = "/gatehouse/router"


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
            return (f"{data.model_name} @{data.alias} removed",
                    f"Alias @{data.alias} was removed from {data.model_name}.", "warning")
        case events.ModelVersionStageTransitioned():
            return (f"{data.model_name} v{data.version} -> {data.to_stage}",
                    f"Version {data.version} of {data.model_name} moved from "
                    f"{data.from_stage or 'None'} to {data.to_stage}.", "info")
        case events.StageTransitionRequested():
            return (f"Transition requested: {data.model_name} v{data.version} -> {data.to_stage}",
                    f"Someone asked to move version {data.version} of {data.model_name} "
                    f"to {data.to_stage}.", "info")
    return None  # tag changes and comments are recorded, not announced


def notification_for(envelope: Envelope) -> events.NotificationRequested | None:
    message = _registry_message(envelope.data)
    if message is None:
        return None
    title, text, severity = message
    data = envelope.data
    return events.NotificationRequested(
        title=title, text=text, severity=severity,
        model_name=getattr(data, "model_name", None), version=getattr(data, "version", None),
        about_event_id=envelope.id, about_event_type=envelope.type,
        dedup_key=f"{envelope.type}|{envelope.subject}|{getattr(data, 'alias', '')}",
        facts={"registry": getattr(data, "registry", "mlflow"),
               "occurred": envelope.time.isoformat()},
    )
