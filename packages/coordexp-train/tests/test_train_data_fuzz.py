"""Fuzz (spec 01 §1.1, B7): broken JSONL lines always yield DataContractError, never another exception.

Two properties: (1) arbitrary JSON substituted anywhere in a record never raises anything but
DataContractError from the loader, and the validator never raises at all; (2) mutations that are
broken by construction (bad coordinates, legacy keys, escaping/missing images, missing keys,
garbage lines) are always reported.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from coordexp.core.errors import DataContractError
from coordexp.train.data import load_jsonl, validate_jsonl

BASE = {
    "images": ["img.png"],
    "width": 32,
    "height": 32,
    "objects": [{"desc": "cat", "bbox_2d": [1, 2, 300, 400]}, {"desc": "tri", "poly": [1, 1, 9, 1, 9, 9]}],
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=8,
)

record_keys = st.sampled_from(
    ["images", "width", "height", "objects", "id", "metadata", "summary"]
) | st.text(max_size=8)
object_keys = st.sampled_from(["desc", "bbox_2d", "poly", "poly_points"]) | st.text(max_size=8)


@st.composite
def arbitrary_records(draw: st.DrawFn) -> dict:
    record = json.loads(json.dumps(BASE))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["record", "object"]))
        if where == "record":
            record[draw(record_keys)] = draw(json_values)
        elif isinstance(record.get("objects"), list) and record["objects"]:
            index = draw(st.integers(0, len(record["objects"]) - 1))
            if isinstance(record["objects"][index], dict):
                record["objects"][index][draw(object_keys)] = draw(json_values)
            else:
                record["objects"][index] = draw(json_values)
    return record


bad_coordinates = st.one_of(
    st.integers(min_value=1000),
    st.integers(max_value=-1),
    st.floats(min_value=0.01, max_value=0.99).map(lambda f: 5 + f),
    st.text(max_size=12).filter(lambda s: not s.startswith("<|coord_")),
    st.integers(0, 5000).map(lambda k: f"<|coord_0{k}|>"),
    st.booleans(),
    st.none(),
    st.lists(st.integers(0, 9), max_size=2),
)


@st.composite
def broken_lines(draw: st.DrawFn) -> str:
    record = json.loads(json.dumps(BASE))
    kind = draw(st.sampled_from(["coord", "legacy", "image", "missing_key", "garbage", "desc", "inverted"]))
    if kind == "coord":
        obj = record["objects"][draw(st.integers(0, 1))]
        values = obj.get("bbox_2d", obj.get("poly"))
        values[draw(st.integers(0, len(values) - 1))] = draw(bad_coordinates)
    elif kind == "legacy":
        record["objects"][0][draw(st.sampled_from(["bbox", "polygon", "line"]))] = [1, 2, 3, 4]
    elif kind == "image":
        record["images"] = [
            draw(
                st.sampled_from(["../img.png", "/img.png", "missing.png", "a/../../img.png", ""])
                | st.text(min_size=1, max_size=20).map(lambda s: "nope_" + s)
            )
        ]
    elif kind == "missing_key":
        del record[draw(st.sampled_from(["images", "width", "height", "objects"]))]
    elif kind == "desc":
        record["objects"][0]["desc"] = draw(
            st.sampled_from(["", " ", "\n\t"]) | json_values.filter(lambda v: not isinstance(v, str))
        )
    elif kind == "inverted":
        record["objects"][0]["bbox_2d"] = [400, 2, 300, 9]
    else:
        return draw(st.text(max_size=40).filter(lambda s: "\n" not in s))
    return json.dumps(record)


def _run(line: str | bytes) -> tuple[object, object]:
    """Load and validate a file whose second line is `line`; return (load outcome, report)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        Image.new("RGB", (32, 32)).save(root / "img.png")
        data = line if isinstance(line, bytes) else line.encode("utf-8", "surrogatepass")
        path = root / "data.jsonl"
        path.write_bytes(json.dumps(BASE).encode() + b"\n" + data + b"\n")
        report = validate_jsonl(path, max_pixels=4096, trainer_variant="stage1")
        try:
            outcome: object = load_jsonl(
                path, max_pixels=4096, trainer_variant="stage1", field_order="desc_first"
            )
        except DataContractError as exc:
            outcome = exc
        return outcome, report


@settings(max_examples=150, deadline=None)
@given(arbitrary_records())
def test_arbitrary_values_only_ever_raise_data_contract_errors(record: dict) -> None:
    outcome, report = _run(json.dumps(record))
    if isinstance(outcome, DataContractError):
        assert report.errors and report.errors[0].rule == outcome.rule
        assert outcome.file is not None and outcome.line is not None
    else:
        assert report.ok and len(outcome) == 2


@settings(max_examples=150, deadline=None)
@given(broken_lines())
def test_broken_records_are_always_reported(line: str) -> None:
    outcome, report = _run(line)
    assert isinstance(outcome, DataContractError)
    assert outcome.line == 2
    assert [e.line for e in report.errors] and {e.line for e in report.errors} == {2}


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=40).filter(lambda b: b"\n" not in b))
def test_garbage_bytes_are_reported(line: bytes) -> None:
    outcome, report = _run(line)
    assert isinstance(outcome, DataContractError)
    assert not report.ok
