"""Microsoft Teams: an Adaptive Card posted to a Teams workflow webhook ("When a Teams webhook
request is received"), carrying the signed one-click rollback link and the MLflow links.

The webhook URL is a secret (its `sig` parameter signs it): it is never logged or recorded, and
errors name only the status. Workflows answer 202 Accepted.
"""

from __future__ import annotations

from shared.channels.base import ChannelError, Delivery, event_kind

ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"
CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
CARD_VERSION = "1.4"
SEVERITY_COLOR = {"info": "Default", "warning": "Warning", "error": "Attention",
                  "critical": "Attention"}
HIDDEN_FACTS = {"occurred"}


def adaptive_card(delivery: Delivery) -> dict:
    """The webhook body: a message with one Adaptive Card attachment (pure)."""
    note = delivery.note
    body: list[dict] = [
        {"type": "TextBlock", "text": note.title, "weight": "Bolder", "size": "Medium",
         "wrap": True, "color": SEVERITY_COLOR[note.severity]},
    ]
    if note.text:
        body.append({"type": "TextBlock", "text": note.text, "wrap": True})
    facts = [{"title": name, "value": value} for name, value in note.facts.items()
             if name not in HIDDEN_FACTS]
    if facts:
        body.append({"type": "FactSet", "facts": facts})
    body.append({"type": "TextBlock", "isSubtle": True, "size": "Small", "wrap": True,
                 "text": f"{note.severity} · {event_kind(note)} · "
                         f"{note.facts.get('occurred', '')}"})
    actions = []
    if delivery.rollback_url and delivery.rollback is not None:
        actions.append({"type": "Action.OpenUrl", "title": "Roll back",
                        "url": delivery.rollback_url, "style": "destructive"})
    for label, url in delivery.links.items():
        if label != "rollback":
            actions.append({"type": "Action.OpenUrl", "title": f"Open {label} in MLflow"
                            if label in ("model", "report", "reliability diagram") else label,
                            "url": url})
    card = {"$schema": CARD_SCHEMA, "type": "AdaptiveCard", "version": CARD_VERSION,
            "msteams": {"width": "Full"}, "body": body}
    if actions:
        card["actions"] = actions
    return {"type": "message",
            "attachments": [{"contentType": ADAPTIVE_CARD, "contentUrl": None, "content": card}]}


def teams_session(retries: int = 3, backoff: float = 0.5):
    """A requests session retrying 429/5xx (honouring Retry-After) and dropped connections."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    retry = Retry(total=retries, connect=retries, read=retries, status=retries,
                  backoff_factor=backoff, status_forcelist=(429, 500, 502, 503, 504),
                  allowed_methods=frozenset({"POST"}), respect_retry_after_header=True,
                  raise_on_status=False)
    session = requests.Session()
    session.mount("https://", HTTPAdapter(max_retries=retry))
    session.mount("http://", HTTPAdapter(max_retries=retry))
    return session


class TeamsChannel:
    name = "teams"
    updates_in_place = False  # a workflow webhook cannot edit what it posted
    resends_safely = False  # a re-sent card is a second card

    def __init__(self, webhook_url: str, *, session=None, backoff: float = 0.5,
                 timeout: float = 10.0):
        self._url = webhook_url
        self.session = session or teams_session(backoff=backoff)
        self.timeout = timeout

    def __repr__(self) -> str:
        return "TeamsChannel(<webhook url hidden>)"

    def deliver(self, delivery: Delivery) -> dict:
        import requests

        try:
            response = self.session.post(self._url, json=adaptive_card(delivery),
                                         timeout=self.timeout)
        except requests.RequestException as exc:
            raise ChannelError(f"Teams webhook unreachable: {type(exc).__name__}", True) from None
        if response.status_code in (200, 201, 202):
            return {"status": response.status_code}
        transient = response.status_code in (408, 429) or response.status_code >= 500
        raise ChannelError(f"Teams webhook answered {response.status_code}", transient)
