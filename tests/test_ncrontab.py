from datetime import UTC, datetime, timedelta

import pytest

from shared.dev.ncrontab import Schedule, next_fire


def fires(schedule: str, after: datetime, count: int = 3) -> list[datetime]:
    parsed, out = Schedule(schedule), []
    for _ in range(count):
        after = parsed.next_fire(after)
        out.append(after)
    return out


T0 = datetime(2024, 1, 1, 0, 0, 0)  # a Monday


@pytest.mark.parametrize("schedule, after, expected", [
    ("* * * * * *", T0, datetime(2024, 1, 1, 0, 0, 1)),
    ("*/5 * * * * *", datetime(2024, 1, 1, 0, 0, 3), datetime(2024, 1, 1, 0, 0, 5)),
    ("0 */5 * * * *", T0, datetime(2024, 1, 1, 0, 5)),
    ("0 0 * * * *", datetime(2024, 1, 1, 0, 30), datetime(2024, 1, 1, 1)),
    ("0 30 9 * * *", datetime(2024, 1, 1, 10), datetime(2024, 1, 2, 9, 30)),
    ("0 0 9-17/4 * * *", datetime(2024, 1, 1, 9, 0, 1), datetime(2024, 1, 1, 13)),
    ("0 0 0 1 1 *", T0, datetime(2025, 1, 1)),
    ("0 0 12 * * 0", T0, datetime(2024, 1, 7, 12)),          # Sunday = 0
    ("0 0 12 * * 6", T0, datetime(2024, 1, 6, 12)),          # Saturday = 6
    ("0 0 12 * * SUN", T0, datetime(2024, 1, 7, 12)),
    ("0 0 12 * * mon-fri", datetime(2024, 1, 5, 13), datetime(2024, 1, 8, 12)),
    ("0 0 0 * JUN *", T0, datetime(2024, 6, 1)),
    ("0 0 0 31 * *", datetime(2024, 4, 1), datetime(2024, 5, 31)),   # skips 30-day months
    ("0 0 0 29 2 *", datetime(2024, 3, 1), datetime(2028, 2, 29)),   # leap days only
    ("0 0 0 29 2 *", datetime(2023, 3, 1), datetime(2024, 2, 29)),
    ("0 0 0 13 * 5", T0, datetime(2024, 9, 13)),             # Friday the 13th: day AND weekday
    ("59 59 23 31 12 *", datetime(2024, 12, 31, 23, 59, 59), datetime(2025, 12, 31, 23, 59, 59)),
    ("0 0 0 * * *", datetime(2024, 12, 31, 23, 59, 59), datetime(2025, 1, 1)),
    ("0 0 0 28-31 2 *", datetime(2023, 2, 28, 1), datetime(2024, 2, 28)),
    ("0,30 15 10 * * *", datetime(2024, 1, 1, 10, 15, 0), datetime(2024, 1, 1, 10, 15, 30)),
    ("10/20 * * * * *", T0, datetime(2024, 1, 1, 0, 0, 10)),
    ("0 5 * * *", T0, datetime(2024, 1, 1, 5)),              # five fields: minute-first, second 0
])
def test_next_fire(schedule, after, expected):
    assert next_fire(schedule, after) == expected


def test_strictly_after_and_microseconds():
    assert next_fire("0 * * * * *", datetime(2024, 1, 1, 0, 1, 0)) == datetime(2024, 1, 1, 0, 2)
    assert next_fire("* * * * * *", datetime(2024, 1, 1, 0, 0, 0, 999999)) == \
        datetime(2024, 1, 1, 0, 0, 1)


def test_sequences():
    assert fires("*/20 * * * * *", T0) == [T0 + timedelta(seconds=s) for s in (20, 40, 60)]
    assert fires("0 0 0 30 * *", datetime(2024, 1, 31)) == [
        datetime(2024, 3, 30), datetime(2024, 4, 30), datetime(2024, 5, 30)]
    assert fires("0 0 8 * * 1,3,5", T0) == [datetime(2024, 1, 1, 8), datetime(2024, 1, 3, 8),
                                           datetime(2024, 1, 5, 8)]


def test_aware_datetimes_keep_their_zone():
    after = datetime(2024, 1, 1, 0, 0, 0, tzinfo=UTC)
    assert next_fire("0 0 * * * *", after) == datetime(2024, 1, 1, 1, tzinfo=UTC)


def test_timespan_interval():
    assert next_fire("00:05:00", T0) == T0 + timedelta(minutes=5)
    assert next_fire("1.02:00:30", T0) == T0 + timedelta(days=1, hours=2, seconds=30)
    assert Schedule("00:00:10").interval == timedelta(seconds=10)


@pytest.mark.parametrize("schedule, message", [
    ("", "expected 6 fields"),
    ("* * * *", "got 4 field(s)"),
    ("* * * * * * *", "got 7 field(s)"),
    ("60 * * * * *", "second field: 60 is outside 0-59"),
    ("* 60 * * * *", "minute field: 60 is outside 0-59"),
    ("* * 24 * * *", "hour field: 24 is outside 0-23"),
    ("* * * 0 * *", "day field: 0 is outside 1-31"),
    ("* * * * 13 *", "month field: 13 is outside 1-12"),
    ("* * * * * 7", "day-of-week field: 7 is outside 0-6"),
    ("* * * * * FUN", "day-of-week field: 'FUN' is not a number or a name"),
    ("*/0 * * * * *", "step '0' must be a positive number"),
    ("5-1 * * * * *", "range '5-1' runs backwards"),
    ("1,,2 * * * * *", "empty list item"),
    ("0 0 0 30 2 *", "day 30 never occurs in month(s) 2"),
    ("0 0 0 31 4,6 *", "day 31 never occurs in month(s) 4, 6"),
    ("00:00:00", "the interval must be positive"),
])
def test_invalid_schedules(schedule, message):
    with pytest.raises(ValueError) as excinfo:
        Schedule(schedule)
    assert message in str(excinfo.value)
    assert repr(schedule) in str(excinfo.value)
