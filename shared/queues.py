"""Queue names, importable at decoration time without pulling in the event schema."""

REGISTRY_EVENTS = "registry-events"
NOTIFICATIONS = "notifications"
