"""Signature compatibility from real mlflow ModelSignature objects and their dict form, and the
holdout validated against the candidate's signature."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.models import ModelSignature
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

from shared.gates.schema import (
    compatibility_problems,
    holdout_problems,
    schema_gate,
    signature_view,
)


def columns(*specs, outputs=None, params=None):
    return ModelSignature(Schema([ColSpec(*spec) if isinstance(spec, tuple) else spec
                                  for spec in specs]),
                          outputs or Schema([ColSpec("long")]), params)


CHAMPION = columns(("double", "amount"), ("long", "age"), ("string", "country"))
HOLDOUT = pd.DataFrame({"amount": [1.0, 2.5], "age": [30, 41], "country": ["nl", "fr"]}).dtypes


def problems(candidate, champion=CHAMPION):
    return compatibility_problems(signature_view(candidate), signature_view(champion))


def test_same_signature_is_compatible_object_or_dict_form():
    assert problems(CHAMPION) == ([], [])
    assert problems(CHAMPION.to_dict(), CHAMPION.to_dict()) == ([], [])
    parsed = {"inputs": signature_view(CHAMPION).inputs}
    assert signature_view(CHAMPION.to_dict()).inputs == parsed["inputs"]


def test_removed_and_retyped_inputs_are_incompatible():
    found, _ = problems(columns(("double", "amount"), ("double", "age")))
    assert "input 'country' removed" in found
    assert "input 'age' changed type long -> double" in found


def test_new_inputs_required_or_optional():
    found, notes = problems(columns(("double", "amount"), ("long", "age"), ("string", "country"),
                                    ColSpec("double", "score", required=False)))
    assert found == [] and notes == ["new optional input 'score'"]
    found, _ = problems(columns(("double", "amount"), ("long", "age"), ("string", "country"),
                                ("double", "score")))
    assert found == ["new required input 'score'"]


def test_changed_outputs_and_params_are_incompatible():
    found, _ = problems(columns(("double", "amount"), ("long", "age"), ("string", "country"),
                                outputs=Schema([TensorSpec(np.dtype("float64"), (-1, 2))])))
    assert any(p.startswith("outputs changed") for p in found)
    with_param = columns(("double", "amount"), ("long", "age"), ("string", "country"),
                         params=ParamSchema([ParamSpec("temperature", "double", 0.5)]))
    assert problems(CHAMPION, with_param)[0] == ["parameter 'temperature' removed"]


def test_tensor_signatures():
    tensor = ModelSignature(Schema([TensorSpec(np.dtype("float64"), (-1, 3))]))
    wider = ModelSignature(Schema([TensorSpec(np.dtype("float64"), (-1, 4))]))
    assert problems(tensor, tensor) == ([], [])
    assert problems(wider, tensor)[0][0].startswith("tensor inputs changed")
    assert problems(tensor)[0][0] == "inputs changed between named columns and tensors"
    frame = pd.DataFrame(np.zeros((2, 3)), columns=list("abc"))
    assert holdout_problems(signature_view(tensor), frame.dtypes.to_dict(), list("abc")) == []
    assert "takes 4 features" in holdout_problems(signature_view(wider),
                                                  frame.dtypes.to_dict(), list("abc"))[0]


def test_holdout_against_the_signature():
    view = signature_view(CHAMPION)
    assert holdout_problems(view, HOLDOUT.to_dict(), list(HOLDOUT.index)) == []
    wrong = pd.DataFrame({"amount": ["x"], "country": ["nl"]}).dtypes.to_dict()
    found = holdout_problems(view, wrong, ["amount", "country"])
    assert "holdout lacks required input 'age'" in found
    assert any("'amount' is" in p and "wants double" in p for p in found)
    ints_for_double = pd.DataFrame({"amount": [1], "age": [2], "country": ["x"]}).dtypes
    assert holdout_problems(view, ints_for_double.to_dict(), ["amount", "age", "country"]) == []


def test_gate():
    ok = schema_gate(CHAMPION, CHAMPION, HOLDOUT.to_dict(), None, True, has_champion=True)
    assert ok.status == "pass"
    broken = schema_gate(columns(("double", "amount")), CHAMPION, HOLDOUT.to_dict(), None, True,
                         has_champion=True)
    assert broken.status == "fail" and broken.blocks and broken.observed == 2
    unsigned = schema_gate(None, CHAMPION, HOLDOUT.to_dict(), None, True, has_champion=True)
    assert unsigned.status == "fail" and "without a signature" in unsigned.detail
    first = schema_gate(CHAMPION, None, HOLDOUT.to_dict(), None, True, has_champion=False)
    assert first.status == "pass"
    unsigned_champion = schema_gate(CHAMPION, None, HOLDOUT.to_dict(), None, True,
                                    has_champion=True)
    assert unsigned_champion.status == "pass"
    assert "compatibility not checked" in unsigned_champion.detail
    with pytest.raises(ValueError, match="not a model signature"):
        signature_view(42)
