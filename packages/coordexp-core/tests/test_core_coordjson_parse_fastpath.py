"""The parser's canonical fast paths never change a parse (spec 01 §1.4; 07 B1–B5).

``parse`` reads canonical records and coord arrays with a few ``str`` operations and leaves
everything else to the general scanner. These tests parse each text twice — as shipped, and with
the fast paths switched off — and require identical results, on canonical texts, their prefixes
(truncation inside any token) and texts mutated at random.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.core.coordjson import parse as parse_mod
from coordexp.core.coordjson.parse import MODES, parse
from coordexp.testing.strategies import canonical_coordjson, field_orders

_PIECES = (
    "{",
    "}",
    "[",
    "]",
    ",",
    ", ",
    ":",
    ": ",
    " ",
    "\n",
    '"',
    '\\"',
    "\\u0041",
    "\x01",
    "desc",
    '"desc": "',
    '"bbox_2d": [',
    '"poly": [',
    "<|coord_7|>",
    "<|coord_07|>",
    "<|coord_1000|>",
    "<|coord_",
    "|>",
    "null",
    "12",
)


def _general_parse(monkeypatch: pytest.MonkeyPatch, *args) -> parse_mod.ParseResult:
    with monkeypatch.context() as patch:
        patch.setattr(parse_mod, "_canonical_record_parts", lambda text, i: None)
        patch.setattr(parse_mod, "_scan_canonical_coord_array", lambda text, i: None)
        return parse(*args)


@st.composite
def texts(draw: st.DrawFn) -> str:
    text = draw(canonical_coordjson(max_objects=5)).text
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(("insert", "delete", "replace", "cut")))
        piece = draw(st.sampled_from(_PIECES))
        if op == "insert":
            text = text[:at] + piece + text[at:]
        elif op == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 6)) :]
        elif op == "replace":
            text = text[:at] + piece + text[at + 1 :]
        else:
            text = text[:at]
    return text


@settings(max_examples=200, deadline=None)
@given(texts(), st.sampled_from(MODES), st.sampled_from(("any", "bbox_only")), st.none() | field_orders())
def test_fast_paths_agree_with_the_general_scanner(text, mode, policy, field_order) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        expected = _general_parse(monkeypatch, text, mode, policy, field_order)
    assert parse(text, mode, policy, field_order) == expected


@settings(max_examples=100, deadline=None)
@given(canonical_coordjson(max_objects=4), st.data())
def test_fast_paths_agree_on_every_prefix_kind(sample, data) -> None:
    cut = data.draw(st.integers(0, len(sample.text)))
    with pytest.MonkeyPatch.context() as monkeypatch:
        expected = _general_parse(monkeypatch, sample.text[:cut], "rollout")
    assert parse(sample.text[:cut], "rollout") == expected


@pytest.mark.parametrize(
    "record",
    [
        '{"desc": "cat", "bbox_2d": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>]}',
        '{"bbox_2d": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>], "desc": "cat"}',
        '{"desc": "a \\"b\\"", "bbox_2d": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>]}',
        '{"desc": "cat", "bbox_2d": [<|coord_1|>,<|coord_2|>, <|coord_3|>, <|coord_4|>]}',
        '{"desc": "cat", "bbox_2d": [<|coord_01|>, <|coord_2|>, <|coord_3|>, <|coord_4|>]}',
        '{"desc": "cat", "bbox_2d": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>], "x": 1}',
        '{"desc": "cat", "poly": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>]}',
        '{"desc": "cat", "poly": []}',
        '{"desc": "", "poly": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>, <|coord_5|>, <|coord_6|>]}',
        '{"poly": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>, <|coord_5|>, <|coord_6|>], "desc": "x"}',
        '{"desc": "cat", "bbox_2d": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>]',
        '{"desc": "c\tat", "bbox_2d": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>]}',
    ],
)
def test_fast_paths_agree_on_near_canonical_records(record: str, monkeypatch: pytest.MonkeyPatch) -> None:
    text = '{"objects": [' + record + ", " + record + "]}"
    for cut in (len(text), len(text) - 3, len(text) // 2):
        expected = _general_parse(monkeypatch, text[:cut], "rollout", "any", "desc_first")
        assert parse(text[:cut], "rollout", "any", "desc_first") == expected


_CANONICAL = '{"desc": "cat", "bbox_2d": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>]}'
_OTHER = '{"desc":"dog", "bbox_2d": [<|coord_5|>, <|coord_6|>, <|coord_7|>, <|coord_8|>]}'


@pytest.mark.parametrize("separator", [", ", ",", " , ", ",\n"])
@pytest.mark.parametrize(
    ("elements", "complete"),
    [
        ((_CANONICAL, _CANONICAL, _OTHER, _CANONICAL), 4),
        ((_OTHER, _CANONICAL, _CANONICAL), 3),
        ((_CANONICAL, "7", _CANONICAL), 3),
        ((_CANONICAL, _CANONICAL, _CANONICAL[:-1]), 2),  # the last record misses its "}"
    ],
)
def test_canonical_runs_hand_over_to_the_general_scanner(
    elements: tuple[str, ...], complete: int, separator: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run of canonical records ends at the first separator or element that is not canonical;
    the general scanner goes on from there with the same state as after reading them one by one."""
    text = '{"objects": [' + separator.join(elements) + "]}"
    expected = _general_parse(monkeypatch, text, "rollout", "any", "desc_first")
    result = parse(text, "rollout", "any", "desc_first")
    assert result == expected
    assert len(result.records) == complete
