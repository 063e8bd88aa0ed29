"""A small NCRONTAB parser for timer triggers: `next_fire(schedule, after) -> datetime`.

Schedules have six fields, `{second} {minute} {hour} {day} {month} {day-of-week}` (a five-field
schedule is read with second 0, as the Functions host does).  Each field takes `*`, values, lists,
ranges and steps (`*/5`, `1-10/2`, `5/15` = `5-max/15`); months and days of the week may be names
(`JAN`, `MON`); day of the week is 0-6 with Sunday = 0.  As in NCrontab, a time must match the day
of the month *and* the day of the week.  A TimeSpan (`hh:mm:ss`, `d.hh:mm:ss`) is a fixed interval.
"""

from __future__ import annotations

import calendar
import re
from datetime import datetime, timedelta

from shared.foundation.storage import _timespan_seconds

MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
# name, lowest, highest, value names (index 0 = lowest)
FIELDS = [("second", 0, 59, None), ("minute", 0, 59, None), ("hour", 0, 23, None),
          ("day", 1, 31, None), ("month", 1, 12, MONTHS), ("day-of-week", 0, 6, DAYS)]
TIMESPAN = re.compile(r"^(\d+\.)?\d{1,2}:\d{1,2}:\d{1,2}(\.\d+)?$")


def _value(text: str, name: str, low: int, high: int, names: list[str] | None) -> int:
    if names and text.upper() in names:
        return low + names.index(text.upper())
    if not text.isdigit():
        raise ValueError(f"{name} field: {text!r} is not a number"
                         + (f" or a name ({', '.join(names)})" if names else ""))
    number = int(text)
    if not low <= number <= high:
        raise ValueError(f"{name} field: {number} is outside {low}-{high}")
    return number


def _field(text: str, name: str, low: int, high: int, names: list[str] | None) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise ValueError(f"{name} field: empty list item in {text!r}")
        span, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"{name} field: step {step_text!r} must be a positive number")
            step = int(step_text)
        if span == "*":
            first, last = low, high
        elif "-" in span:
            first_text, last_text = span.split("-", 1)
            first = _value(first_text, name, low, high, names)
            last = _value(last_text, name, low, high, names)
            if first > last:
                raise ValueError(f"{name} field: range {span!r} runs backwards")
        else:
            first = _value(span, name, low, high, names)
            last = high if slash else first
        values.update(range(first, last + 1, step))
    return frozenset(values)


class Schedule:
    """A parsed NCRONTAB expression or TimeSpan interval."""

    def __init__(self, expression: str):
        self.expression = expression
        self.interval: timedelta | None = None
        text = expression.strip()
        if TIMESPAN.match(text):
            self.interval = timedelta(seconds=_timespan_seconds(text))
            if self.interval <= timedelta(0):
                raise ValueError(f"invalid schedule {expression!r}: the interval must be positive")
            return
        parts = text.split()
        if len(parts) == 5:
            parts = ["0"] + parts
        if len(parts) != 6:
            raise ValueError(f"invalid schedule {expression!r}: expected 6 fields "
                             "'{second} {minute} {hour} {day} {month} {day-of-week}' "
                             f"or a TimeSpan 'hh:mm:ss', got {len(parts)} field(s)")
        try:
            (self.seconds, self.minutes, self.hours, self.days, self.months,
             self.weekdays) = [_field(p, *f) for p, f in zip(parts, FIELDS, strict=True)]
        except ValueError as exc:
            raise ValueError(f"invalid schedule {expression!r}: {exc}") from None
        longest = max(calendar.monthrange(2000, m)[1] for m in self.months)  # 2000: a leap year
        if min(self.days) > longest:
            raise ValueError(f"invalid schedule {expression!r}: day {min(self.days)} never occurs "
                             f"in month(s) {', '.join(str(m) for m in sorted(self.months))}")

    def next_fire(self, after: datetime) -> datetime:
        """The first occurrence strictly after `after` (naive or aware; same tzinfo back)."""
        if self.interval is not None:
            return after + self.interval
        t = after.replace(microsecond=0) + timedelta(seconds=1)
        limit = after.year + 400  # the Gregorian calendar repeats every 400 years
        while t.year <= limit:
            if t.month not in self.months:
                t = t.replace(day=1, hour=0, minute=0, second=0) + timedelta(days=32)
                t = t.replace(day=1)
            elif t.day not in self.days or (t.weekday() + 1) % 7 not in self.weekdays:
                t = t.replace(hour=0, minute=0, second=0) + timedelta(days=1)
            elif t.hour not in self.hours:
                t = t.replace(minute=0, second=0) + timedelta(hours=1)
            elif t.minute not in self.minutes:
                t = t.replace(second=0) + timedelta(minutes=1)
            elif t.second not in self.seconds:
                t += timedelta(seconds=1)
            else:
                return t
        raise ValueError(f"schedule {self.expression!r} never fires")


def next_fire(schedule: str | Schedule, after: datetime) -> datetime:
    if not isinstance(schedule, Schedule):
        schedule = Schedule(schedule)
    return schedule.next_fire(after)
