"""The CoordJSON parser (spec 01 §1.4; invariants 07 B1–B5)."""

from __future__ import annotations

import json
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.core.codec import coord_token
from coordexp.core.coordjson.parse import DROP_BUCKETS, MODES, DropCounts, ParseResult, parse
from coordexp.core.coordjson.serialize import CoordObject, serialize
from coordexp.testing.strategies import (
    boxes,
    canonical_coordjson,
    canonical_polys,
    coord_object_lists,
    descs,
    field_orders,
)

CAT = CoordObject("black cat", "bbox_2d", (50, 100, 500, 501))
SIGN = CoordObject("road sign", "poly", (300, 200, 360, 260, 240, 260))
BOX = "[<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_4|>]"


def _wrap(*elements: str) -> str:
    return '{"objects": [' + ", ".join(elements) + "]}"


def _summary(result: ParseResult) -> list[tuple]:
    return [(r.desc, r.geom_key, r.values) for r in result.valid_records]


def check_invariants(result: ParseResult, text: str) -> None:
    """The B2 invariants, checked against the text independently of the scanner."""
    assert result.record_ends == tuple(r.span[1] for r in result.records)
    assert all(a < b for a, b in zip(result.record_ends, result.record_ends[1:]))
    assert set(result.drop_counts) == set(DROP_BUCKETS)
    assert sum(result.drop_counts.values()) == sum(not r.valid for r in result.records)
    assert result.drop_counts["other"] == 0 and result.drop_counts["coord_misaligned"] == 0
    if result.open_end is not None:
        assert text[result.open_end - 1] == "[" and text[result.container_start] == "{"
    else:
        assert not result.records
    if result.closed:
        assert not result.truncated and not result.incomplete_tail
    for index, record in enumerate(result.records):
        assert record.index == index
        assert record.span[0] >= result.open_end
        assert record.valid == (record.drop_reason is None)
        assert record.valid or record.drop_reason in DROP_BUCKETS
        if not record.valid:
            continue
        start, end = record.span
        assert text[start] == "{" and text[end - 1] == "}"
        assert isinstance(record.desc, str) and record.desc.strip()
        assert all(0 <= v <= 999 for v in record.values)
        if record.geom_key == "bbox_2d":
            x1, y1, x2, y2 = record.values
            assert x1 <= x2 and y1 <= y2
        else:
            assert record.geom_key == "poly" and len(record.values) >= 6 and len(record.values) % 2 == 0
        # Exactly two keys, checked with the json module on the transpiled record text.
        geom_start, geom_end = record.geom_span
        assert (
            start < geom_start < geom_end <= end and start < record.desc_span[0] <= record.desc_span[1] < end
        )
        transpiled = text[start:geom_start] + json.dumps(list(record.values)) + text[geom_end:end]
        loaded = json.loads(transpiled, object_pairs_hook=list)
        assert sorted(key for key, _ in loaded) == sorted(["desc", record.geom_key])
        assert dict(loaded)["desc"] == record.desc


# --- B1 --------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(canonical_coordjson())
def test_b1_strict_parse_of_serialize_is_identity(sample):
    result = parse(sample.text, "strict", field_order=sample.field_order)
    assert result.strict_ok and result.closed and not result.truncated and not result.incomplete_tail
    assert result.objects() == list(sample.objects)
    assert result.drop_counts.total == 0 and result.field_order_mismatch == 0
    assert result.open_end == sample.layout.head_end
    assert [r.span for r in result.records] == list(sample.layout.record_spans)
    assert [r.desc_span for r in result.records] == list(sample.layout.desc_spans)
    assert [r.geom_span for r in result.records] == list(sample.layout.geom_spans)
    assert {r.field_order for r in result.records} <= {sample.field_order}
    check_invariants(result, sample.text)


# --- B2 --------------------------------------------------------------------------------------

_JSONISH = list('{}[]:,"\\ \n\tu0123456789abcdefE+-.<|>_') + [
    "objects",
    "desc",
    "bbox_2d",
    "poly",
    "<|coord_",
]


@st.composite
def mutated_texts(draw: st.DrawFn) -> str:
    text = draw(canonical_coordjson(max_objects=4)).text
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(("insert", "delete", "replace")))
        piece = draw(st.sampled_from(_JSONISH))
        if op == "insert":
            text = text[:at] + piece + text[at:]
        elif op == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 8)) :]
        else:
            text = text[:at] + piece + text[at + 1 :]
    return text


any_text = st.one_of(
    st.text(max_size=80),
    st.lists(st.sampled_from(_JSONISH), max_size=40).map("".join),
    mutated_texts(),
)


@settings(max_examples=200, deadline=None)
@given(any_text, st.sampled_from(MODES), st.sampled_from(("any", "bbox_only")), st.none() | field_orders())
def test_b2_never_raises_and_invariants_hold(text, mode, policy, field_order):
    result = parse(text, mode, policy, field_order)
    check_invariants(result, text)


def _json_container_ok(text: str) -> bool:
    def reject_constant(name: str) -> None:
        raise ValueError(name)

    try:
        value = json.loads(
            text, object_pairs_hook=lambda pairs: ("object", pairs), parse_constant=reject_constant
        )
    except ValueError:
        return False
    return (
        isinstance(value, tuple)
        and len(value[1]) == 1
        and value[1][0][0] == "objects"
        and isinstance(value[1][0][1], list)
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def json_containers(draw: st.DrawFn) -> str:
    elements = draw(st.lists(json_values, max_size=4))
    text = json.dumps(
        {"objects": elements},
        ensure_ascii=draw(st.booleans()),
        indent=draw(st.sampled_from((None, 1, "\t"))),
        separators=draw(st.sampled_from(((",", ":"), (", ", ": "), (" ,", " : ")))),
    )
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(_JSONISH)) + text[at + draw(st.integers(0, 1)) :]
    return text


@settings(max_examples=200, deadline=None)
@given(st.one_of(json_containers(), st.lists(st.sampled_from(_JSONISH), max_size=30).map("".join)))
def test_b2_syntax_agrees_with_the_json_module_without_coord_literals(text):
    # Without coord literals the grammar is plain JSON: one container object with the single key
    # "objects" holding an array is accepted exactly when the json module accepts it.
    if "<|coord_" in text:
        return
    result = parse(text, "strict")
    assert result.strict_ok == _json_container_ok(text)
    if result.strict_ok:
        assert len(result.records) == len(json.loads(text)["objects"])


def test_b2_deep_nesting_does_not_recurse():
    deep = _wrap("[" * 200_000)
    result = parse(deep)
    assert result.records == () and result.truncated is False and result.incomplete_tail
    closed = _wrap("[" * 50_000 + "]" * 50_000)
    assert parse(closed, "strict").drop_counts["not_object"] == 1


def test_b2_non_str_input_is_a_type_error():
    with pytest.raises(TypeError):
        parse(b'{"objects": []}')
    with pytest.raises(ValueError, match="mode"):
        parse("", mode="lenient")
    with pytest.raises(ValueError, match="geometry_policy"):
        parse("", geometry_policy="poly_only")


# --- drop buckets: one example each, and B3 ----------------------------------------------------


@pytest.mark.parametrize(
    ("element", "bucket"),
    [
        ('"just a string"', "not_object"),
        ("<|coord_5|>", "not_object"),
        ("[" + BOX + "]", "not_object"),
        ('{"desc": "a", "bbox_2d": ' + BOX + ', "score": 1}', "unexpected_keys"),
        ('{"desc": "a", "label": ' + BOX + "}", "unexpected_keys"),
        ('{"desc": "a", "desc": "b", "bbox_2d": ' + BOX + "}", "unexpected_keys"),
        ('{"desc": "a", "bbox_2d": ' + BOX + ', "bbox_2d": ' + BOX + "}", "unexpected_keys"),
        ('{"bbox_2d": ' + BOX + ', "poly": ' + BOX + "}", "unexpected_keys"),
        ('{"bbox_2d": ' + BOX + "}", "missing_desc"),
        ('{"desc": 3, "bbox_2d": ' + BOX + "}", "missing_desc"),
        ('{"desc": " \\t\\n", "bbox_2d": ' + BOX + "}", "missing_desc"),
        ('{"desc": "\\ud800", "bbox_2d": ' + BOX + "}", "missing_desc"),
        ('{"desc": "a"}', "missing_geom"),
        ("{}", "missing_desc"),
        ('{"desc": "a", "bbox_2d": [<|coord_1|>, <|coord_2|>, <|coord_3|>]}', "wrong_arity"),
        ('{"desc": "a", "bbox_2d": "1 2 3 4"}', "wrong_arity"),
        ('{"desc": "a", "poly": ' + BOX + "}", "wrong_arity"),
        ('{"desc": "a", "poly": [' + ", ".join(coord_token(k) for k in range(1, 8)) + "]}", "wrong_arity"),
        ('{"desc": "a", "bbox_2d": [1, 2, 3, 4]}', "bad_coord"),
        ('{"desc": "a", "bbox_2d": [<|coord_1|>, "<|coord_2|>", <|coord_3|>, <|coord_4|>]}', "bad_coord"),
        ('{"desc": "a", "bbox_2d": [<|coord_1|>, [<|coord_2|>], <|coord_3|>, <|coord_4|>]}', "bad_coord"),
        ('{"desc": "a", "bbox_2d": [<|coord_1|>, <|coord_2|>, <|coord_3|>, <|coord_1000|>]}', "bad_coord"),
        ('{"desc": "a", "bbox_2d": [<|coord_1|>, <|coord_02|>, <|coord_3|>, <|coord_4|>]}', "bad_coord"),
        ('{"desc": "a", "bbox_2d": [<|coord_5|>, <|coord_2|>, <|coord_3|>, <|coord_4|>]}', "bbox_invalid"),
        ('{"desc": "a", "bbox_2d": [<|coord_1|>, <|coord_5|>, <|coord_3|>, <|coord_4|>]}', "bbox_invalid"),
    ],
)
def test_drop_bucket_examples(element, bucket):
    result = parse(_wrap(element), "strict")
    assert result.strict_ok
    (record,) = result.records
    assert (record.valid, record.drop_reason) == (False, bucket)
    assert result.drop_counts[bucket] == 1 and result.drop_counts.total == 1


def test_poly_unsupported_only_under_bbox_only():
    text = serialize([SIGN, CAT], "desc_first")
    assert parse(text, geometry_policy="any").drop_counts.total == 0
    result = parse(text, geometry_policy="bbox_only")
    assert [r.drop_reason for r in result.records] == ["poly_unsupported", None]
    assert result.objects() == [CAT]


def test_bucket_order_and_counts_mapping():
    assert DROP_BUCKETS == (
        "not_object", "unexpected_keys", "missing_desc", "missing_geom", "wrong_arity",
        "bad_coord", "bbox_invalid", "poly_unsupported", "coord_misaligned", "other",
    )  # fmt: skip
    counts = DropCounts({"bad_coord": 2})
    assert dict(counts) == {**dict.fromkeys(DROP_BUCKETS, 0), "bad_coord": 2} and counts.total == 2
    assert pickle.loads(pickle.dumps(counts)) == counts and hash(counts) == hash(DropCounts({"bad_coord": 2}))
    with pytest.raises(ValueError, match="unknown drop bucket"):
        DropCounts({"typo": 1})


_BAD_ITEMS = ("5", '"<|coord_5|>"', "[<|coord_5|>]", "<|coord_1000|>", "<|coord_05|>", "null")
_GEOMETRY = ("bbox_2d", "poly")
_sometimes = st.sampled_from((False,) * 5 + (True,))  # one violation in six, so that combinations vary


@st.composite
def _desc_member(draw: st.DrawFn) -> tuple[str, str, dict]:
    form = draw(st.sampled_from(("ok",) * 10 + ("number", "blank", "null", "lone", "array")))
    text = {
        "ok": json.dumps(draw(descs())),
        "number": "5",
        "blank": '" \\t "',
        "null": "null",
        "lone": '"a\\udc00b"',
        "array": '["a"]',
    }[form]
    return "desc", text, {"desc_ok": form == "ok"}


@st.composite
def _geometry_member(draw: st.DrawFn, key: str) -> tuple[str, str, dict]:
    if key == "bbox_2d":
        values = list(draw(boxes(allow_degenerate=False)))
        if draw(_sometimes):
            axis = draw(st.sampled_from((0, 1)))
            values[axis], values[axis + 2] = values[axis + 2], values[axis]
    else:
        values = list(draw(canonical_polys()))
    items = [coord_token(v) for v in values]
    form = draw(st.sampled_from(("ok",) * 9 + ("short", "long", "scalar")))
    if form == "short":
        items = items[: draw(st.integers(0, len(items) - 1))]
    elif form == "long":
        items.append(coord_token(draw(st.integers(0, 999))))
    coords_ok = True
    if items and draw(_sometimes):
        items[draw(st.integers(0, len(items) - 1))] = draw(st.sampled_from(_BAD_ITEMS))
        coords_ok = False
    if form == "scalar":
        return key, draw(st.sampled_from(('"x"', "7", "{}", "<|coord_3|>"))), {"arity_ok": False}
    n = len(items)
    arity_ok = n == 4 if key == "bbox_2d" else (n >= 6 and n % 2 == 0)
    meta = {"arity_ok": arity_ok, "coords_ok": coords_ok, "values": values if form == "ok" else None}
    return key, "[" + ", ".join(items) + "]", meta


@st.composite
def broken_records(draw: st.DrawFn) -> tuple[list[tuple[str, str]], str | None, str]:
    """A record with any combination of rule violations → (members as (key, value text), the
    expected bucket, geometry policy). The expectation is the spec 01 §1.4 table applied, first
    row first, to what was generated (each member knows whether it is well-formed)."""
    policy = draw(st.sampled_from(("any", "bbox_only")))
    members = []
    if not draw(_sometimes):
        members.append(draw(_desc_member()))
    if not draw(_sometimes):
        members.append(draw(_geometry_member(draw(st.sampled_from(_GEOMETRY)))))
    for _ in range(draw(st.sampled_from((0,) * 8 + (1, 2)))):
        kind = draw(st.sampled_from(("score", "desc", "bbox_2d", "poly")))
        if kind == "score":
            members.append(("score", "0.9", {}))
        elif kind == "desc":
            members.append(draw(_desc_member()))
        else:
            members.append(draw(_geometry_member(kind)))
    members = [members[i] for i in draw(st.permutations(range(len(members))))]

    keys = [key for key, _, _ in members]
    geometry = [(key, meta) for key, _, meta in members if key in _GEOMETRY]
    desc_meta = [meta for key, _, meta in members if key == "desc"]
    if (
        len(keys) > 2
        or len(set(keys)) != len(keys)
        or any(key not in ("desc", *_GEOMETRY) for key in keys)
        or len(geometry) > 1
    ):
        expected = "unexpected_keys"
    elif not desc_meta or not desc_meta[0]["desc_ok"]:
        expected = "missing_desc"
    elif not geometry:
        expected = "missing_geom"
    else:
        key, meta = geometry[0]
        values = meta.get("values")
        if not meta["arity_ok"]:
            expected = "wrong_arity"
        elif not meta["coords_ok"]:
            expected = "bad_coord"
        elif key == "bbox_2d" and (values[2] < values[0] or values[3] < values[1]):
            expected = "bbox_invalid"
        elif key == "poly" and policy == "bbox_only":
            expected = "poly_unsupported"
        else:
            expected = None
    return [(key, text) for key, text, _ in members], expected, policy


def _record_text(members: list[tuple[str, str]], separator: str = ", ", colon: str = ": ") -> str:
    return "{" + separator.join(f'"{key}"{colon}{value}' for key, value in members) + "}"


@settings(max_examples=200, deadline=None)
@given(broken_records(), st.sampled_from((", ", ",", " ,\n ")), st.sampled_from((": ", ":", " :\t")))
def test_b3_first_bucket_wins_and_b4_key_order_never_matters(case, separator, colon):
    members, expected, policy = case
    result = parse(_wrap(_record_text(members, separator, colon)), "strict", geometry_policy=policy)
    assert result.strict_ok
    (record,) = result.records
    assert record.drop_reason == expected
    # B4: any other key order gives the same verdict.
    swapped = parse(_wrap(_record_text(members[::-1], separator, colon)), "strict", geometry_policy=policy)
    assert swapped.records[0].drop_reason == expected
    check_invariants(result, _wrap(_record_text(members, separator, colon)))


@settings(max_examples=100, deadline=None)
@given(coord_object_lists(min_size=1), st.lists(st.booleans(), min_size=1), field_orders())
def test_b4_mixed_key_orders_are_valid_and_mismatches_counted(objects, flips, configured):
    other = "geometry_first" if configured == "desc_first" else "desc_first"
    orders = [other if flips[i % len(flips)] else configured for i in range(len(objects))]
    text = '{"objects": [' + ", ".join(serialize([o], f)[13:-2] for o, f in zip(objects, orders)) + "]}"
    result = parse(text, "strict", field_order=configured)
    assert result.objects() == objects
    assert [r.field_order for r in result.records] == orders
    assert result.field_order_mismatch == orders.count(other)
    assert parse(text, "strict").field_order_mismatch == 0  # no configured order: nothing to count


def test_degenerate_boxes_are_valid_and_counted():
    text = serialize(
        [CoordObject("a", "bbox_2d", (5, 5, 5, 9)), CAT, CoordObject("b", "bbox_2d", (1, 7, 3, 7))],
        "desc_first",
    )
    result = parse(text)
    assert len(result.valid_records) == 3 and result.degenerate_pred_bbox == 2


# --- B5 --------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(canonical_coordjson(), st.data())
def test_b5_prefix_returns_exactly_the_records_closed_within_it(sample, data):
    full = parse(sample.text, "rollout")
    cut = data.draw(st.integers(0, len(sample.text)))
    prefix = sample.text[:cut]
    result = parse(prefix, "rollout")
    expected = [r for r in full.records if r.valid and r.span[1] <= cut]
    assert result.valid_records == tuple(expected)
    assert result.record_ends == tuple(e for e in full.record_ends if e <= cut)
    assert result.drop_counts.total == 0
    assert result.closed == (cut == len(sample.text))
    assert result.truncated == (cut < len(sample.text) and cut > 0)
    if result.open_end is not None:
        assert result.complete_end == max((result.open_end, *result.record_ends))
        assert prefix[: result.complete_end].rstrip()[-1] in "[}"
    check_invariants(result, prefix)


# --- syntax errors, flags and modes ----------------------------------------------------------


def test_syntax_error_stops_the_scan_and_keeps_complete_elements():
    good = serialize([CAT], "desc_first")[13:-2]
    broken = '{"desc": "x", "bbox_2d": [<|coord_1|>,, <|coord_2|>]}'
    text = _wrap(good, broken, good)
    result = parse(text)
    assert _summary(result) == [("black cat", "bbox_2d", CAT.values)]
    assert result.incomplete_tail and not result.truncated and not result.closed
    assert result.error_pos == text.index(",,") + 1
    assert result.complete_end == result.record_ends[0]


@pytest.mark.parametrize(
    "bad_desc",
    ['"raw\nnewline"', '"bad \\x escape"', '"\\u12G4"', "'single'"],
)
def test_invalid_strings_are_syntax_errors(bad_desc):
    result = parse(_wrap('{"desc": ' + bad_desc + ', "bbox_2d": ' + BOX + "}"))
    assert result.records == () and result.incomplete_tail and result.error_pos is not None


def test_escapes_decode_like_json():
    desc = '"\\u00e9\\ud83d\\ude00 \\"q\\" \\\\ \\/ \\b\\f\\n\\r\\t"'
    result = parse(_wrap('{"desc": ' + desc + ', "bbox_2d": ' + BOX + "}"), "strict")
    assert result.records[0].desc == json.loads(desc) == 'é😀 "q" \\ / \b\f\n\r\t'
    assert result.records[0].valid


def test_whitespace_anywhere_between_tokens():
    text = (
        ' \n{ "objects"\t:\r\n[ {"bbox_2d" :[ <|coord_1|> ,<|coord_2|>,<|coord_3|>\n,<|coord_4|> ] ,'
        '"desc":"a" } ] }\n '
    )
    result = parse(text, "strict")
    assert result.strict_ok and _summary(result) == [("a", "bbox_2d", (1, 2, 3, 4))]


def test_empty_and_truncated_containers():
    assert parse('{"objects": []}', "strict").strict_ok
    for text, open_end in (('{"objects": [', 13), ('{"objects": [  ', 13), ('{"obj', None), ("{", None)):
        result = parse(text)
        assert (result.open_end, result.truncated, result.incomplete_tail, result.closed) == (
            open_end,
            True,
            False,
            False,
        )
        assert result.container_start == 0
    after_element = parse(_wrap(serialize([CAT], "desc_first")[13:-2])[:-2] + ", ")
    assert after_element.truncated and not after_element.incomplete_tail and len(after_element.records) == 1
    array_closed = parse(serialize([CAT], "desc_first")[:-1])
    assert array_closed.truncated and not array_closed.incomplete_tail and not array_closed.closed
    nothing = parse("  \n")
    assert (nothing.container_start, nothing.open_end, nothing.truncated) == (None, None, False)


def test_trailing_comma_and_junk_inside_the_container_are_syntax_errors():
    good = serialize([CAT], "desc_first")[13:-2]
    for text in (_wrap(good)[:-2] + ", ]}", _wrap(good)[:-2] + " x]}", _wrap(good)[:-1] + "x"):
        result = parse(text)
        assert len(result.valid_records) == 1 and result.incomplete_tail and not result.closed
        assert not result.strict_ok


def test_modes_container_start_and_junk():
    text = serialize([CAT], "desc_first")
    junk_after = text + " <|im_end|> trailing"
    for mode in MODES:
        result = parse(junk_after, mode)
        assert result.trailing_junk and not result.strict_ok and result.objects() == [CAT]
    assert parse("\n  " + text + "\n", "strict").strict_ok

    leading = "Sure! Here it is: " + text
    assert parse(leading, "rollout").objects() == [] and parse(leading, "rollout").open_end is None
    assert parse(leading, "strict").error_pos == 0
    salvaged = parse(leading, "salvage")
    assert salvaged.objects() == [CAT] and salvaged.leading_junk and not salvaged.strict_ok
    assert salvaged.container_start == len("Sure! Here it is: ")

    decoys = '{"other": 1} {"objects" 5 { "objects" :[' + serialize([CAT], "desc_first")[13:]
    found = parse(decoys, "salvage")
    assert found.objects() == [CAT] and found.container_start == decoys.index('{ "objects" :[')
    assert parse(text, "salvage").leading_junk is False


def test_container_key_must_be_objects():
    for text in ('{"object": []}', '{"objects": {}}', '["objects"]', '{"objects": [], "extra": 1}'):
        result = parse(text, "strict")
        assert not result.strict_ok and not result.valid_records
    escaped = '{"\\u006fbjects": []}'
    assert parse(escaped, "strict").strict_ok


def test_result_helpers():
    result = parse(serialize([SIGN, CAT], "geometry_first"), geometry_policy="bbox_only")
    assert [r.index for r in result.valid_records] == [1]
    with pytest.raises(ValueError, match="dropped"):
        result.records[0].to_object()
    changed = result.with_records([result.records[0], result.records[1].dropped("coord_misaligned")])
    assert changed.drop_counts["coord_misaligned"] == 1 and changed.valid_records == ()
    with pytest.raises(ValueError, match="identity"):
        result.with_records(result.records[:1])
    with pytest.raises(ValueError, match="unknown drop bucket"):
        result.records[1].dropped("nope")


