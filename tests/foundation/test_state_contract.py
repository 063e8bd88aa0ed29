"""One contract for every state table: MemoryTable must behave as StateTable does on Azurite, so a
store tested on a MemoryTable behaves the same on Azure Tables."""

from __future__ import annotations

import uuid

import pytest

from shared.foundation.state import ConcurrencyConflict, MemoryTable, StateTable, Table

P, R = "partition", "row"


@pytest.fixture(params=["memory", "azurite"])
def table(request) -> Table:
    if request.param == "memory":
        return MemoryTable()
    storage = request.getfixturevalue("storage")
    return StateTable(storage, f"contract{uuid.uuid4().hex[:16]}")


def test_get_of_a_missing_row_is_none(table):
    assert table.get(P, R) is None


def test_insert_then_get_returns_the_properties_and_the_etag(table):
    etag = table.insert(P, R, {"name": "fraud", "count": 3, "ratio": 0.25, "on": True})
    row = table.get(P, R)
    assert row.properties == {"name": "fraud", "count": 3, "ratio": 0.25, "on": True}
    assert row.etag == etag


def test_a_row_read_is_a_copy(table):
    table.insert(P, R, {"name": "fraud"})
    table.get(P, R).properties["name"] = "changed"
    assert table.get(P, R).properties == {"name": "fraud"}


def test_insert_of_an_existing_row_conflicts(table):
    table.insert(P, R, {"n": 1})
    with pytest.raises(ConcurrencyConflict):
        table.insert(P, R, {"n": 2})
    assert table.get(P, R).properties == {"n": 1}


def test_replace_with_the_current_etag_replaces_and_changes_the_etag(table):
    first = table.insert(P, R, {"n": 1, "gone": "soon"})
    second = table.replace(P, R, {"n": 2}, first)
    assert second != first
    assert table.get(P, R).properties == {"n": 2}  # replace, not merge
    assert table.get(P, R).etag == second


def test_replace_with_a_stale_etag_conflicts(table):
    stale = table.insert(P, R, {"n": 1})
    table.replace(P, R, {"n": 2}, stale)
    with pytest.raises(ConcurrencyConflict):
        table.replace(P, R, {"n": 3}, stale)
    assert table.get(P, R).properties == {"n": 2}


def test_delete_with_a_stale_etag_conflicts_and_with_the_current_one_deletes(table):
    stale = table.insert(P, R, {"n": 1})
    current = table.replace(P, R, {"n": 2}, stale)
    with pytest.raises(ConcurrencyConflict):
        table.delete(P, R, stale)
    table.delete(P, R, current)
    assert table.get(P, R) is None


def test_delete_of_a_missing_row_does_nothing(table):
    """As Azure Tables' delete_entity: a row someone else deleted first is no conflict."""
    etag = table.insert(P, R, {"n": 1})
    table.delete(P, R, etag)
    table.delete(P, R, etag)
    assert table.get(P, R) is None


def test_replace_of_a_missing_row_conflicts(table):
    etag = table.insert(P, R, {"n": 1})
    table.delete(P, R, etag)
    with pytest.raises(ConcurrencyConflict):
        table.replace(P, R, {"n": 2}, etag)
    assert table.get(P, R) is None


def test_rows_lists_one_partition_in_row_order(table):
    table.insert("b", "2", {"n": 2})
    table.insert("b", "1", {"n": 1})
    table.insert("a", "1", {"n": 0})
    rows = table.rows("b")
    assert [row.properties for row in rows] == [{"n": 1}, {"n": 2}]
    assert [row.etag for row in rows] == [table.get("b", "1").etag, table.get("b", "2").etag]
    assert table.rows("c") == []


def test_rows_of_a_partition_with_a_quote(table):
    table.insert("it's", "1", {"n": 1})
    assert [row.properties for row in table.rows("it's")] == [{"n": 1}]


# ---- modify: the read-modify-write loop ----

def increment(properties):
    return {"n": (properties or {"n": 0})["n"] + 1}


def test_modify_inserts_when_the_row_is_absent(table):
    saved = table.modify(P, R, increment)
    assert saved.properties == {"n": 1}
    assert table.get(P, R) == saved


def test_modify_returns_the_row_as_saved(table):
    saved = table.modify(P, R, lambda properties: {"n": 1, "missing": None})
    assert saved == table.get(P, R)
    assert saved.properties == {"n": 1}


def test_modify_updates_when_the_row_is_present(table):
    table.insert(P, R, {"n": 1})
    saved = table.modify(P, R, increment)
    assert saved.properties == {"n": 2}
    assert table.get(P, R) == saved


def test_modify_writes_nothing_when_the_update_returns_none(table):
    assert table.modify(P, R, lambda properties: None) is None
    assert table.get(P, R) is None
    etag = table.insert(P, R, {"n": 1})
    seen = []
    unchanged = table.modify(P, R, lambda properties: seen.append(properties))
    assert seen == [{"n": 1}]
    assert unchanged.properties == {"n": 1} and unchanged.etag == etag
    assert table.get(P, R).etag == etag


def interrupted_once(table, concurrent_write):
    """An update that lets another writer change the row between its read and its write, once."""
    calls = []

    def update(properties):
        calls.append(properties)
        if len(calls) == 1:
            concurrent_write()
        return increment(properties)
    return update, calls


def test_modify_retries_when_a_concurrent_writer_changed_the_row(table):
    table.insert(P, R, {"n": 1})
    update, calls = interrupted_once(
        table, lambda: table.replace(P, R, {"n": 10}, table.get(P, R).etag))
    saved = table.modify(P, R, update)
    assert calls == [{"n": 1}, {"n": 10}]
    assert saved.properties == {"n": 11}
    assert table.get(P, R) == saved


def test_modify_retries_when_a_concurrent_writer_inserted_the_row_first(table):
    update, calls = interrupted_once(table, lambda: table.insert(P, R, {"n": 10}))
    saved = table.modify(P, R, update)
    assert calls == [None, {"n": 10}]
    assert table.get(P, R).properties == saved.properties == {"n": 11}


def test_modify_gives_up_after_its_attempts_when_the_row_keeps_changing(table):
    table.insert(P, R, {"n": 0})
    calls = []

    def update(properties):
        calls.append(properties)
        table.replace(P, R, {"n": 100 + len(calls)}, table.get(P, R).etag)
        return increment(properties)

    with pytest.raises(ConcurrencyConflict):
        table.modify(P, R, update, attempts=3)
    assert len(calls) == 3
    assert table.get(P, R).properties == {"n": 103}


def test_values_round_trip_with_their_types(table):
    values = {"int": 2**31 - 1, "negative": -7, "zero": 0.0, "flag": False, "empty": "",
              "text": "ü/#?", "raw": b"\x00\xff"}
    table.insert(P, R, values)
    saved = table.get(P, R).properties
    assert saved == values
    assert {name: type(value) for name, value in saved.items()} == \
        {name: type(value) for name, value in values.items()}


def test_a_none_value_is_left_out(table):
    table.insert(P, R, {"n": 1, "missing": None})
    assert table.get(P, R).properties == {"n": 1}


@pytest.mark.parametrize("value", [2**31, {"a": 1}, [1, 2]])
def test_values_azure_tables_cannot_store_raise_type_error(table, value):
    with pytest.raises(TypeError):
        table.insert(P, R, {"value": value})
    assert table.get(P, R) is None


def test_a_property_over_64_kb_is_refused(table):
    with pytest.raises(ValueError) as refused:
        table.insert(P, R, {"text": "x" * 40_000})  # 80,000 bytes in UTF-16
    assert "64" in str(refused.value) and table.get(P, R) is None
