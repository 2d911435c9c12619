"""Canonical CoordJSON serialization (spec 01 §1.3)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings

from coordexp.core.codec import coord_token
from coordexp.core.coordjson.serialize import (
    CLOSURE,
    EMPTY_CONTAINER,
    OPEN_PREFIX,
    CoordObject,
    serialize,
    serialize_object,
    serialize_records,
    serialize_with_spans,
)
from coordexp.core.errors import DataContractError
from coordexp.testing.strategies import canonical_coordjson, coord_object_lists, field_orders

CAT = CoordObject("black cat", "bbox_2d", (50, 100, 500, 501))
SIGN = CoordObject("road sign", "poly", (300, 200, 360, 260, 240, 260))
MUG = CoordObject("mug", "bbox_2d", (610, 420, 700, 555))


def test_spec_examples_byte_exact():
    assert serialize([CAT], "desc_first") == (
        '{"objects": [{"desc": "black cat", "bbox_2d": '
        "[<|coord_50|>, <|coord_100|>, <|coord_500|>, <|coord_501|>]}]}"
    )
    assert serialize([CAT], "geometry_first") == (
        '{"objects": [{"bbox_2d": [<|coord_50|>, <|coord_100|>, <|coord_500|>, <|coord_501|>], '
        '"desc": "black cat"}]}'
    )
    assert serialize([SIGN, MUG], "desc_first") == (
        '{"objects": [{"desc": "road sign", "poly": [<|coord_300|>, <|coord_200|>, <|coord_360|>, '
        '<|coord_260|>, <|coord_240|>, <|coord_260|>]}, {"desc": "mug", "bbox_2d": [<|coord_610|>, '
        "<|coord_420|>, <|coord_700|>, <|coord_555|>]}]}"
    )
    assert serialize([], "desc_first") == EMPTY_CONTAINER == '{"objects": []}'
    assert OPEN_PREFIX == '{"objects": [' and CLOSURE == "]}"


@pytest.mark.parametrize(
    ("desc", "literal"),
    [
        ('say "hi"', r'"say \"hi\""'),
        ("a\\b", r'"a\\b"'),
        ("tab\there\nnl\rcr\bbs\fff", r'"tab\there\nnl\rcr\bbs\fff"'),
        ("nul\x00 us\x1f esc\x1b", r'"nul\u0000 us\u001f esc\u001b"'),
        ("café 中文 😀 \x7f \u2028 /", '"café 中文 😀 \x7f \u2028 /"'),
    ],
)
def test_desc_escaping(desc, literal):
    text = serialize_object(CoordObject(desc, "bbox_2d", (1, 2, 3, 4)), "desc_first")
    assert (
        text == '{"desc": ' + literal + ', "bbox_2d": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>]}'
    )


@pytest.mark.parametrize(
    ("kwargs", "rule"),
    [
        ({"desc": "   ", "geom_key": "bbox_2d", "values": (1, 2, 3, 4)}, "desc_empty"),
        ({"desc": 5, "geom_key": "bbox_2d", "values": (1, 2, 3, 4)}, "desc_empty"),
        ({"desc": "x\ud800", "geom_key": "bbox_2d", "values": (1, 2, 3, 4)}, "desc_empty"),
        ({"desc": "x", "geom_key": "bbox", "values": (1, 2, 3, 4)}, "geom_count"),
        ({"desc": "x", "geom_key": "bbox_2d", "values": (1, 2, 3, 1000)}, "coord_range"),
        ({"desc": "x", "geom_key": "bbox_2d", "values": (1, 2, 3, 4.5)}, "coord_range"),
        ({"desc": "x", "geom_key": "bbox_2d", "values": (1, 2, 3, True)}, "coord_range"),
        ({"desc": "x", "geom_key": "bbox_2d", "values": "1234"}, "coord_range"),
        ({"desc": "x", "geom_key": "bbox_2d", "values": (1, 2, 3)}, "bbox_arity"),
        ({"desc": "x", "geom_key": "bbox_2d", "values": (5, 2, 3, 4)}, "bbox_inverted"),
        ({"desc": "x", "geom_key": "poly", "values": (1, 2, 3, 4)}, "poly_arity"),
        ({"desc": "x", "geom_key": "poly", "values": (1, 2, 3, 4, 5, 6, 7)}, "poly_arity"),
    ],
)
def test_coord_object_validation(kwargs, rule):
    with pytest.raises(DataContractError) as caught:
        CoordObject(**kwargs)
    assert caught.value.rule == rule


def test_degenerate_box_is_a_valid_object():
    assert CoordObject("line", "bbox_2d", [5, 5, 5, 9]).values == (5, 5, 5, 9)


def test_bad_arguments():
    with pytest.raises(ValueError, match="field_order"):
        serialize([CAT], "desc_last")
    with pytest.raises(TypeError, match="CoordObject"):
        serialize([{"desc": "x"}], "desc_first")


@settings(max_examples=150, deadline=None)
@given(canonical_coordjson())
def test_spans_point_at_their_text(sample):
    layout = sample.layout
    text = layout.text
    assert text == serialize(sample.objects, sample.field_order)
    assert text[: layout.head_end] == OPEN_PREFIX and text[layout.tail_start :] == CLOSURE
    assert text[layout.head_end : layout.tail_start] == serialize_records(sample.objects, sample.field_order)
    for obj, record, desc, geom, coords in zip(
        sample.objects, layout.record_spans, layout.desc_spans, layout.geom_spans, layout.coord_spans
    ):
        assert text[record[0] : record[1]] == serialize_object(obj, sample.field_order)
        assert json.loads('"' + text[desc[0] : desc[1]] + '"') == obj.desc
        assert text[desc[0] - 1] == '"' and text[desc[1]] == '"'
        assert text[geom[0]] == "[" and text[geom[1] - 1] == "]"
        assert [text[a:b] for a, b in coords] == [coord_token(v) for v in obj.values]
        assert all(geom[0] < a < b < geom[1] for a, b in coords)


@settings(max_examples=100, deadline=None)
@given(coord_object_lists(), field_orders())
def test_transpiled_text_is_json_with_the_same_content(objects, field_order):
    # Offline tools transpile <|coord_k|> to k; the result must be strict JSON.
    layout = serialize_with_spans(objects, field_order)
    text = layout.text
    transpiled = text
    for obj, spans in reversed(list(zip(objects, layout.coord_spans))):
        for value, (start, end) in reversed(list(zip(obj.values, spans))):
            transpiled = transpiled[:start] + str(value) + transpiled[end:]
    loaded = json.loads(transpiled)
    assert list(loaded) == ["objects"]
    for obj, record in zip(objects, loaded["objects"]):
        first, second = list(record)
        assert (first, second) == (
            ("desc", obj.geom_key) if field_order == "desc_first" else (obj.geom_key, "desc")
        )
        assert record["desc"] == obj.desc and tuple(record[obj.geom_key]) == obj.values
    assert "\n" not in text


def test_fragment_layout_for_fn_append():
    layout = serialize_with_spans([MUG, CAT], "geometry_first", head=", ", tail="]}")
    assert layout.text == ", " + serialize_records([MUG, CAT], "geometry_first") + "]}"
    assert layout.head_end == 2 and layout.text[layout.record_spans[0][0]] == "{"
    assert layout.text[layout.desc_spans[1][0] : layout.desc_spans[1][1]] == "black cat"
    empty = serialize_with_spans([], "desc_first", head="", tail="]}")
    assert empty.text == "]}" and empty.tail_start == 0
