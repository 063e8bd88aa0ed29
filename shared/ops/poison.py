"""Poison messages (those that failed every retry) with why they got there."""

from __future__ import annotations

from collections.abc import Iterator


def poison_entry(poison_queue: str, message, encoding: str, failures) -> dict:
    """One poison message with why it got there: the failure its handler recorded last."""
    from shared.foundation.storage import decode_queue_message

    entry = {"queue": poison_queue, "id": message.id, "inserted": str(message.inserted_on)}
    try:
        body = decode_queue_message(message.content or "", encoding)
    except ValueError:
        body = None
    record = None if body is None else failures.find(poison_queue.removesuffix("-poison"), body)
    if record is None:
        entry["last_error"] = ("no failure recorded: the host gave up on it without the handler "
                               "failing (a crash, or a message that could not be decoded)")
    else:
        entry.update(handler=record.get("handler"), attempts=record.get("attempts"),
                     last_error=record.get("last_error"),
                     last_failed_at=record.get("last_failed_at"),
                     first_failed_at=record.get("first_failed_at"))
        if record.get("event_id"):
            entry["event_id"] = record["event_id"]
    entry["content"] = (message.content or "")[:400]
    return entry


def poison_queues(service, queue: str | None = None) -> list[str]:
    names = [q.name for q in service.list_queues() if q.name.endswith("-poison")]
    if queue:
        wanted = queue if queue.endswith("-poison") else f"{queue}-poison"
        names = [name for name in names if name == wanted]
    return names


def poison_messages(storage: str, queue: str | None = None) -> Iterator[dict]:
    """Every poison message (up to 32 per queue), each with its recorded failure."""
    from shared.foundation.failures import FailureLog
    from shared.foundation.storage import queue_options, queue_service

    service = queue_service(storage)
    failures = FailureLog.connect(storage)
    encoding = queue_options().message_encoding
    for name in poison_queues(service, queue):
        for message in service.get_queue_client(name).peek_messages(max_messages=32):
            yield poison_entry(name, message, encoding, failures)
