"""Schema compatibility: the candidate's MLflow signature against the champion's, and the holdout
against the candidate's signature.

Signatures are accepted as `mlflow.models.ModelSignature` objects or in their `to_dict()` form
(inputs/outputs/params as JSON strings, or already parsed lists). Incompatible, for a caller that
works with the champion today:

- an input the champion takes is gone, or changed type (tensor inputs: dtype or shape);
- the candidate requires an input the champion did not take (callers do not send it);
- column inputs became tensor inputs or the other way round;
- the outputs changed in any way;
- an inference parameter the champion accepted is gone or changed type.

A new optional input is compatible and noted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from shared.gates.results import FAIL, PASS, GateResult, skipped

# Which pandas dtype kinds satisfy each MLflow column type (MLflow's own enforcement also widens
# integers to floating point).
_KINDS = {"double": "fiu", "float": "fiu", "long": "iu", "integer": "iu", "boolean": "b",
          "string": "OUST", "binary": "OS", "datetime": "M"}


@dataclass(frozen=True)
class Field:
    name: str | None
    type: str
    required: bool = True


@dataclass(frozen=True)
class SignatureView:
    inputs: tuple[Field, ...]
    outputs: tuple[Field, ...]
    params: tuple[Field, ...]

    @property
    def column_based(self) -> bool:
        return bool(self.inputs) and all(f.name is not None and not f.type.startswith("tensor")
                                         for f in self.inputs)

    @property
    def input_names(self) -> list[str]:
        return [f.name for f in self.inputs if f.name is not None]


def _fields(value: Any) -> tuple[Field, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = json.loads(value)
    fields = []
    for spec in value:
        declared = spec.get("type")
        if declared == "tensor":
            tensor = spec.get("tensor-spec", {})
            kind = f"tensor:{tensor.get('dtype')}{list(tensor.get('shape', []))}"
        elif isinstance(declared, str) and declared not in ("array", "object", "map"):
            kind = declared
        else:  # nested types: compare their whole description
            kind = json.dumps({k: v for k, v in spec.items()
                               if k not in ("name", "required", "default")}, sort_keys=True)
        if spec.get("shape"):  # inference parameters may be lists of a fixed shape
            kind = f"{kind}{list(spec['shape'])}"
        fields.append(Field(spec.get("name"), kind, bool(spec.get("required", True))))
    return tuple(fields)


def signature_view(signature: Any) -> SignatureView | None:
    """A ModelSignature, its to_dict() form, or None."""
    if signature is None:
        return None
    if hasattr(signature, "to_dict"):
        signature = signature.to_dict()
    if not isinstance(signature, dict):
        raise ValueError(f"not a model signature: {type(signature).__name__}")
    return SignatureView(_fields(signature.get("inputs")), _fields(signature.get("outputs")),
                         _fields(signature.get("params")))


def compatibility_problems(candidate: SignatureView, champion: SignatureView) -> tuple[list[str],
                                                                                       list[str]]:
    """(problems, notes) of the candidate against the champion."""
    problems, notes = [], []
    if candidate.column_based != champion.column_based:
        problems.append("inputs changed between named columns and tensors")
    elif candidate.column_based:
        theirs = {f.name: f for f in champion.inputs}
        mine = {f.name: f for f in candidate.inputs}
        for name, field in theirs.items():
            if name not in mine:
                problems.append(f"input {name!r} removed")
            elif mine[name].type != field.type:
                problems.append(f"input {name!r} changed type {field.type} -> {mine[name].type}")
        for name, field in mine.items():
            if name not in theirs:
                if field.required:
                    problems.append(f"new required input {name!r}")
                else:
                    notes.append(f"new optional input {name!r}")
    elif candidate.inputs != champion.inputs:
        problems.append("tensor inputs changed: "
                        f"{[f.type for f in champion.inputs]} -> "
                        f"{[f.type for f in candidate.inputs]}")
    if candidate.outputs != champion.outputs:
        problems.append(f"outputs changed: {[(f.name, f.type) for f in champion.outputs]} -> "
                        f"{[(f.name, f.type) for f in candidate.outputs]}")
    mine_params = {f.name: f for f in candidate.params}
    for field in champion.params:
        if field.name not in mine_params:
            problems.append(f"parameter {field.name!r} removed")
        elif mine_params[field.name].type != field.type:
            problems.append(f"parameter {field.name!r} changed type")
    return problems, notes


def holdout_problems(signature: SignatureView, dtypes: dict[str, Any],
                     feature_columns: list[str]) -> list[str]:
    """Whether the holdout's columns (name -> dtype) can be fed to a model with `signature`."""
    problems = []
    if signature.column_based:
        for field in signature.inputs:
            if field.name not in dtypes:
                if field.required:
                    problems.append(f"holdout lacks required input {field.name!r}")
                continue
            kind = getattr(dtypes[field.name], "kind", "O")
            allowed = _KINDS.get(field.type)
            if allowed is not None and kind not in allowed:
                problems.append(f"holdout column {field.name!r} is {dtypes[field.name]}, the "
                                f"signature wants {field.type}")
        return problems
    for field in signature.inputs:
        shape = field.type[field.type.find("["):] if "[" in field.type else ""
        try:
            width = json.loads(shape)[-1] if shape else -1
        except (ValueError, IndexError):
            width = -1
        if isinstance(width, int) and width > 0 and width != len(feature_columns):
            problems.append(f"the signature takes {width} features, the holdout has "
                            f"{len(feature_columns)} feature columns")
        non_numeric = [c for c in feature_columns
                       if getattr(dtypes.get(c), "kind", "O") not in "fiub"]
        if non_numeric:
            problems.append(f"tensor input, but holdout columns are not numeric: {non_numeric}")
    return problems


def schema_gate(candidate: Any, champion: Any, dtypes: dict[str, Any] | None,
                feature_columns: list[str] | None, blocking: bool,
                has_champion: bool) -> GateResult:
    mine = signature_view(candidate)
    if mine is None:
        return GateResult("schema", FAIL, blocking, observed=1.0, threshold=0.0,
                          detail="the candidate was logged without a signature: its inputs "
                                 "cannot be checked")
    problems, notes = [], []
    if has_champion:
        theirs = signature_view(champion)
        if theirs is None:
            notes.append("the champion has no signature: compatibility not checked")
        else:
            found, notes = compatibility_problems(mine, theirs)
            problems += found
    if dtypes is not None:
        problems += holdout_problems(mine, dtypes, feature_columns or list(dtypes))
    if not has_champion and dtypes is None:
        return skipped("schema", blocking, "no champion and no holdout to check against")
    detail = "; ".join(problems) if problems else "compatible" + (
        f" ({'; '.join(notes)})" if notes else "")
    return GateResult("schema", FAIL if problems else PASS, blocking,
                      observed=float(len(problems)), threshold=0.0, detail=detail,
                      evidence={"problems": problems, "notes": notes,
                                "candidate_inputs": [f.__dict__ for f in mine.inputs]})
