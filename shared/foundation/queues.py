"""Queue names, importable at decoration time without pulling in the event schema.

Storage queues have no topics, so Gatehouse routes: receivers put inbound events on
REGISTRY_EVENTS, handlers publish what they decide on GATEHOUSE_EVENTS, and the router
(functions/router.py) forwards each event to the queue of every handler that acts on it
(shared/routing.py says which) and asks for a notification when the event is worth one.
The ramp and monitor timers put one tick per endpoint on their own queues (fanout.py).
"""

REGISTRY_EVENTS = "registry-events"
GATEHOUSE_EVENTS = "gatehouse-events"
NOTIFICATIONS = "notifications"
RUN_GATES = "run-gates"
START_CANARY = "start-canary"
OPEN_ROLLBACK = "open-rollback"
TRIGGER_RETRAINING = "trigger-retraining"
RAMP_TICKS = "ramp-ticks"
MONITOR_TICKS = "monitor-ticks"
