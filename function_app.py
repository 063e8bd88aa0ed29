"""The Gatehouse Function App: one Blueprint per module in functions/."""

import azure.functions as func

from functions import notify, registry_poller, registry_webhooks, router, slack_actions

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

for module in (registry_webhooks, registry_poller, router, notify, slack_actions):
    app.register_functions(module.bp)
