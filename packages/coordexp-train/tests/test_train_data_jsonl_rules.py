"""B7 (spec 07): every data rule of spec 01 §1.1 raises with its rule id and file:line; a
degenerate box is counted, an inverted one raises. Plus loader details: value forms, ids,
polygon canonicalization on load, validate_jsonl collecting every error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from coordexp.core.errors import ConfigError, DataContractError
from coordexp.train.data import (
    DEGENERATE_BBOX_COUNT,
    POLY_CANONICALIZED_COUNT,
    REORDERED_RECORDS_COUNT,
    load_jsonl,
    validate_jsonl,
)

WIDTH, HEIGHT = 64, 48


def good_record(**overrides: object) -> dict:
    record = {
        "images": ["img.png"],
        "width": WIDTH,
        "height": HEIGHT,
        "objects": [{"desc": "cat", "bbox_2d": [10, 20, 300, 400]}],
    }
    record.update(overrides)
    return record


def write_case(tmp: Path, lines: list[object], *, image_size: tuple[int, int] = (WIDTH, HEIGHT)) -> Path:
    """Write img.png, big.png (2x) and data.jsonl; dict/list lines are JSON-encoded, str lines verbatim."""
    Image.new("RGB", image_size, (90, 90, 90)).save(tmp / "img.png")
    Image.new("RGB", (2 * image_size[0], 2 * image_size[1]), (90, 90, 90)).save(tmp / "big.png")
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    path = tmp / "data.jsonl"
    path.write_text(text, encoding="utf-8")
    return path


def load(path: Path, **kwargs: object):
    options = {"max_pixels": 1 << 20, "trainer_variant": "stage1", "field_order": "desc_first"}
    options.update(kwargs)
    return load_jsonl(path, **options)


def one_object(obj: dict) -> dict:
    return good_record(objects=[obj])


# (case id, expected rule, bad second line, extra loader options)
RULE_CASES = [
    ("geom_none", "geom_count", one_object({"desc": "cat"}), {}),
    (
        "geom_two",
        "geom_count",
        one_object({"desc": "cat", "bbox_2d": [1, 2, 3, 4], "poly": [1, 1, 5, 1, 5, 5]}),
        {},
    ),
    ("legacy_bbox", "legacy_key", one_object({"desc": "cat", "bbox": [1, 2, 3, 4]}), {}),
    ("legacy_polygon", "legacy_key", one_object({"desc": "cat", "polygon": [1, 1, 5, 1, 5, 5]}), {}),
    ("legacy_line", "legacy_key", one_object({"desc": "cat", "line": [1, 1, 5, 5]}), {}),
    ("coord_above", "coord_range", one_object({"desc": "cat", "bbox_2d": [1, 2, 3, 1000]}), {}),
    ("coord_pixels", "coord_range", one_object({"desc": "cat", "bbox_2d": [32, 48, 320, 1240]}), {}),
    ("coord_negative", "coord_range", one_object({"desc": "cat", "bbox_2d": [-1, 2, 3, 4]}), {}),
    ("coord_fraction", "coord_range", one_object({"desc": "cat", "bbox_2d": [1.5, 2, 3, 4]}), {}),
    ("coord_bool", "coord_range", one_object({"desc": "cat", "bbox_2d": [True, 2, 3, 4]}), {}),
    ("coord_nested", "coord_range", one_object({"desc": "cat", "bbox_2d": [[1], 2, 3, 4]}), {}),
    ("coord_not_list", "coord_range", one_object({"desc": "cat", "bbox_2d": "1,2,3,4"}), {}),
    ("token_leading_zero", "coord_range", one_object({"desc": "cat", "bbox_2d": ["<|coord_01|>"] * 4}), {}),
    ("token_above", "coord_range", one_object({"desc": "cat", "bbox_2d": ["<|coord_1000|>"] * 4}), {}),
    ("mixed_forms", "coord_range", one_object({"desc": "cat", "bbox_2d": [1, "<|coord_2|>", 3, 4]}), {}),
    ("bbox_inverted_x", "bbox_inverted", one_object({"desc": "cat", "bbox_2d": [10, 2, 5, 4]}), {}),
    ("bbox_inverted_y", "bbox_inverted", one_object({"desc": "cat", "bbox_2d": [1, 20, 5, 4]}), {}),
    ("bbox_arity", "bbox_arity", one_object({"desc": "cat", "bbox_2d": [1, 2, 3]}), {}),
    ("poly_odd", "poly_arity", one_object({"desc": "cat", "poly": [1, 1, 5, 1, 5, 5, 7]}), {}),
    ("poly_short", "poly_arity", one_object({"desc": "cat", "poly": [1, 1, 5, 1]}), {}),
    ("poly_collapses", "poly_arity", one_object({"desc": "cat", "poly": [1, 1, 1, 1, 5, 5, 5, 5]}), {}),
    (
        "poly_points",
        "poly_arity",
        one_object({"desc": "cat", "poly": [1, 1, 5, 1, 5, 5], "poly_points": 4}),
        {},
    ),
    ("desc_missing", "desc_empty", one_object({"bbox_2d": [1, 2, 3, 4]}), {}),
    ("desc_blank", "desc_empty", one_object({"desc": "  \t", "bbox_2d": [1, 2, 3, 4]}), {}),
    ("desc_number", "desc_empty", one_object({"desc": 7, "bbox_2d": [1, 2, 3, 4]}), {}),
    (
        "variant_geom",
        "variant_geom",
        one_object({"desc": "cat", "poly": [1, 1, 5, 1, 5, 5]}),
        {"trainer_variant": "stage2_two_channel"},
    ),
    ("size_mismatch", "image_size", good_record(width=WIDTH + 1), {}),
    (
        "max_pixels",
        "image_size",
        good_record(images=["big.png"], width=2 * WIDTH, height=2 * HEIGHT),
        {"max_pixels": WIDTH * HEIGHT},
    ),
    ("width_zero", "image_size", good_record(width=0), {}),
    ("height_string", "image_size", good_record(height="48"), {}),
    (
        "too_long",
        "too_long",
        good_record(objects=[{"desc": "a", "bbox_2d": [1, 2, 3, 4]}] * 2),
        {"length_fn": lambda record: 50 * len(record.objects), "max_length": 99},
    ),
    ("json_syntax", "json_syntax", '{"images": ["img.png"], "width": 64,', {}),
    ("json_nan", "json_syntax", '{"images": ["img.png"], "width": NaN}', {}),
    ("blank_line", "json_syntax", "   ", {}),
    ("duplicate_key", "duplicate_key", '{"images": ["img.png"], "images": ["img.png"]}', {}),
    ("not_object", "record_shape", [1, 2], {}),
    ("missing_objects", "record_shape", {"images": ["img.png"], "width": WIDTH, "height": HEIGHT}, {}),
    ("two_images", "record_shape", good_record(images=["img.png", "img.png"]), {}),
    ("objects_not_list", "record_shape", good_record(objects={"desc": "cat"}), {}),
    ("object_not_dict", "record_shape", good_record(objects=["cat"]), {}),
    ("bad_id", "record_shape", good_record(id=[1]), {}),
    ("unknown_record_key", "unknown_key", good_record(image="img.png"), {}),
    (
        "unknown_object_key",
        "unknown_key",
        one_object({"desc": "cat", "bbox_2d": [1, 2, 3, 4], "score": 1}),
        {},
    ),
    ("escaping_path", "image_path", good_record(images=["../img.png"]), {}),
    ("absolute_path", "image_path", good_record(images=["/etc/passwd"]), {}),
    ("missing_image", "image_path", good_record(images=["nope.png"]), {}),
    ("duplicate_id", "duplicate_id", good_record(id="0"), {}),
]


@pytest.mark.parametrize("rule,bad,options", [c[1:] for c in RULE_CASES], ids=[c[0] for c in RULE_CASES])
def test_each_rule_raises_with_rule_id_and_file_line(
    tmp_path: Path, rule: str, bad: object, options: dict
) -> None:
    path = write_case(tmp_path, [good_record(), bad, good_record()])
    with pytest.raises(DataContractError) as info:
        load(path, **options)
    error = info.value
    assert error.rule == rule
    assert (error.file, error.line) == (str(path.absolute()), 2)
    assert f"{path.absolute()}:2" in str(error)
    assert f"[{rule}]" in str(error)


def test_object_errors_name_object_index_and_field(tmp_path: Path) -> None:
    bad = good_record(
        objects=[{"desc": "a", "bbox_2d": [1, 2, 3, 4]}, {"desc": "b", "bbox_2d": [9, 2, 3, 4]}]
    )
    path = write_case(tmp_path, [bad])
    with pytest.raises(DataContractError) as info:
        load(path)
    assert (info.value.object_index, info.value.field) == (1, "bbox_2d")
    assert "store [x1,y1,x2,y2] with x1≤x2, y1≤y2" in str(info.value)


def test_legacy_keys_name_their_replacement(tmp_path: Path) -> None:
    for legacy, replacement in (("bbox", "bbox_2d"), ("polygon", "poly")):
        path = write_case(tmp_path, [one_object({"desc": "cat", legacy: [1, 1, 5, 1, 5, 5]})])
        with pytest.raises(DataContractError, match=f"use '{replacement}'"):
            load(path)


def test_json_syntax_error_reports_file_line_column(tmp_path: Path) -> None:
    path = write_case(tmp_path, [good_record(), '{"images": ["img.png"] "width": 1}'])
    with pytest.raises(DataContractError) as info:
        load(path)
    assert f"{path.absolute()}:2:24" in str(info.value)


def test_invalid_utf8_is_a_syntax_error(tmp_path: Path) -> None:
    path = write_case(tmp_path, [good_record()])
    path.write_bytes(path.read_bytes() + b'{"images": ["\xff"]}\n')
    with pytest.raises(DataContractError) as info:
        load(path)
    assert (info.value.rule, info.value.line) == ("json_syntax", 2)


def test_undecodable_image(tmp_path: Path) -> None:
    path = write_case(tmp_path, [good_record(images=["broken.png"])])
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    with pytest.raises(DataContractError) as info:
        load(path)
    assert info.value.rule == "image_decode"


def test_unknown_key_suggests_the_close_match(tmp_path: Path) -> None:
    path = write_case(tmp_path, [good_record(image="img.png")])
    with pytest.raises(DataContractError, match="did you mean 'images'"):
        load(path)


def test_degenerate_boxes_are_counted_not_raised(tmp_path: Path) -> None:
    objects = [
        {"desc": "line", "bbox_2d": [5, 5, 5, 90]},
        {"desc": "point", "bbox_2d": [7, 7, 7, 7]},
        {"desc": "box", "bbox_2d": [1, 1, 9, 9]},
    ]
    path = write_case(tmp_path, [good_record(objects=objects), good_record(objects=objects[:1])])
    dataset = load(path)
    assert dataset.counters[DEGENERATE_BBOX_COUNT] == 3
    assert validate_jsonl(path).counters[DEGENERATE_BBOX_COUNT] == 3


def test_value_forms_floats_and_tokens_give_the_same_bins(tmp_path: Path) -> None:
    forms = [
        [10, 20, 300, 400],
        [10.0000004, 19.9999996, 300.0, 400],
        ["<|coord_10|>", "<|coord_20|>", "<|coord_300|>", "<|coord_400|>"],
    ]
    path = write_case(tmp_path, [one_object({"desc": "cat", "bbox_2d": f}) for f in forms])
    dataset = load(path)
    assert [r.objects[0].values for r in dataset] == [(10, 20, 300, 400)] * 3


def test_default_id_is_line_index_and_explicit_ids_are_strings(tmp_path: Path) -> None:
    path = write_case(tmp_path, [good_record(), good_record(id=17), good_record(id="abc"), good_record()])
    assert [r.id for r in load(path)] == ["0", "17", "abc", "3"]


def test_record_fields_image_metadata_and_location(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = write_case(
        tmp_path, [good_record(images=["./sub/../img.png"], metadata={"k": [1, "x"]}, summary="s")]
    )
    record = load(path)[0]
    assert record.image == tmp_path.absolute() / "img.png"
    assert record.image_ref == "./sub/../img.png"
    assert (record.metadata, record.summary) == ({"k": [1, "x"]}, "s")
    assert (record.width, record.height, record.source_line) == (WIDTH, HEIGHT, 1)


def test_polygons_are_canonicalized_on_load_and_counted(tmp_path: Path) -> None:
    counter_clockwise = [300, 200, 240, 260, 360, 260]  # the §1.3 triangle, reversed
    closed = [300, 200, 360, 260, 240, 260, 300, 200]  # canonical but with a closing repeat
    canonical = [300, 200, 360, 260, 240, 260]
    objects = [
        {"desc": "a", "poly": counter_clockwise},
        {"desc": "b", "poly": closed},
        {"desc": "c", "poly": canonical},
    ]
    dataset = load(write_case(tmp_path, [good_record(objects=objects)]))
    assert [o.values for o in dataset[0].objects] == [tuple(canonical)] * 3
    assert dataset.counters[POLY_CANONICALIZED_COUNT] == 2


def test_sorted_loading_reorders_and_counts(tmp_path: Path) -> None:
    objects = [
        {"desc": "low", "bbox_2d": [0, 500, 10, 510]},
        {"desc": "right", "bbox_2d": [50, 100, 60, 110]},
        {"desc": "left", "bbox_2d": [5, 100, 60, 110]},
    ]
    path = write_case(tmp_path, [good_record(objects=objects), good_record()])
    dataset = load(path)
    assert [o.desc for o in dataset[0].objects] == ["left", "right", "low"]
    assert dataset.counters[REORDERED_RECORDS_COUNT] == 1
    random_mode = load(path, ordering="random")
    assert [o.desc for o in random_mode[0].objects] == ["low", "right", "left"]
    assert random_mode.counters[REORDERED_RECORDS_COUNT] == 0


def test_check_images_false_skips_file_checks_but_not_max_pixels(tmp_path: Path) -> None:
    path = write_case(tmp_path, [good_record(images=["absent.png"], width=10, height=10)])
    assert len(load(path, check_images=False)) == 1
    with pytest.raises(DataContractError, match="max_pixels"):
        load(path, check_images=False, max_pixels=99)


def test_validate_collects_all_errors_and_summarizes(tmp_path: Path) -> None:
    lines = [
        good_record(
            objects=[{"desc": "a", "bbox_2d": [1, 1, 1, 9]}, {"desc": "t", "poly": [1, 1, 9, 1, 9, 9]}]
        ),
        good_record(
            objects=[{"desc": "", "bbox_2d": [1, 2, 3, 4]}, {"desc": "x", "bbox": [1, 2, 3, 4]}],
            extra=1,
            width=0,
        ),
        "{oops",
        good_record(objects=[]),
        good_record(images=["../escape.png"]),
    ]
    report = validate_jsonl(write_case(tmp_path, lines))
    assert not report.ok
    assert [(e.line, e.rule) for e in report.errors] == [
        (2, "unknown_key"),
        (2, "image_size"),
        (2, "desc_empty"),
        (2, "legacy_key"),
        (3, "json_syntax"),
        (5, "image_path"),
    ]
    assert (report.num_lines, report.num_records, report.num_objects, report.empty_records) == (5, 2, 2, 1)
    assert report.geometry_counts == {"bbox_2d": 1, "poly": 1}
    assert report.counters[DEGENERATE_BBOX_COUNT] == 1
    assert report.errors_by_rule()["image_size"] == 1
    assert any("errors: 6" in line for line in report.summary_lines())


def test_bad_options_raise_config_errors(tmp_path: Path) -> None:
    path = write_case(tmp_path, [good_record()])
    with pytest.raises(ConfigError, match="custom.object_field_order"):
        load(path, field_order="desc_last")
    with pytest.raises(ConfigError, match="custom.object_ordering"):
        load(path, ordering="shuffled")
    with pytest.raises(ConfigError, match="custom.trainer_variant"):
        load(path, trainer_variant="stage3")
    with pytest.raises(ConfigError, match="template.max_length"):
        load(path, length_fn=len)
    with pytest.raises(DataContractError, match="not found"):
        load(tmp_path / "missing.jsonl")


def test_length_fn_sees_the_gt_ordered_record(tmp_path: Path) -> None:
    objects = [{"desc": "b", "bbox_2d": [0, 500, 10, 510]}, {"desc": "a", "bbox_2d": [0, 100, 10, 110]}]
    seen = []

    def length_fn(record):
        seen.append([o.desc for o in record.objects])
        return 5

    load(write_case(tmp_path, [good_record(objects=objects)]), length_fn=length_fn, max_length=5)
    assert seen == [["a", "b"]]


PATHOLOGICAL_LINES = [
    (
        "lone_surrogate_path",
        '{"images": ["\\ud800.png"], "width": 64, "height": 48, "objects": []}',
        "image_path",
    ),
    ("nul_path", '{"images": ["a\\u0000.png"], "width": 64, "height": 48, "objects": []}', "image_path"),
    ("long_path", json.dumps(good_record(images=["a" * 5000 + ".png"])), "image_path"),
    (
        "lone_surrogate_desc",
        '{"images": ["img.png"], "width": 64, "height": 48, '
        '"objects": [{"desc": "\\udc00", "bbox_2d": [1, 2, 3, 4]}]}',
        "desc_empty",
    ),
    ("deep_nesting", "[" * 100_000 + "]" * 100_000, "json_syntax"),
    ("infinite_width", '{"images": ["img.png"], "width": 1e400, "height": 48, "objects": []}', "image_size"),
    (
        "infinite_coord",
        '{"images": ["img.png"], "width": 64, "height": 48, '
        '"objects": [{"desc": "a", "bbox_2d": [1e400, 2, 3, 4]}]}',
        "coord_range",
    ),
    ("huge_int", '{"id": ' + "9" * 5000 + "}", "json_syntax"),
]


@pytest.mark.parametrize(
    "line,rule", [c[1:] for c in PATHOLOGICAL_LINES], ids=[c[0] for c in PATHOLOGICAL_LINES]
)
def test_pathological_values_are_data_errors(tmp_path: Path, line: str, rule: str) -> None:
    path = write_case(tmp_path, [line])
    with pytest.raises(DataContractError) as info:
        load(path)
    assert (info.value.rule, info.value.line) == (rule, 1)
