"""The Gatehouse Function App: one Blueprint per module in functions/."""

import azure.functions as func

from functions import (
    alerts,
    monitor,
    notify,
    registry_poller,
    registry_webhooks,
    retraining,
    rollout,
    router,
    run_gates,
    slack_actions,
    status_page,
    ticks,
)

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

for module in (registry_webhooks, registry_poller, router, run_gates, rollout, notify,
               slack_actions, alerts, monitor, retraining, status_page, ticks):
    app.register_functions(module.bp)
