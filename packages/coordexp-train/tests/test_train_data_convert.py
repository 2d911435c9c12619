"""Converters to contract JSONL (spec 01 §1.2 worked example, §1.6 sorting, §1.7 polygons)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from coordexp.core.codec import pixel_to_bin
from coordexp.core.errors import ConfigError, DataContractError
from coordexp.train.data import convert_coco, convert_pixel_jsonl, load_jsonl, validate_jsonl


def write_pixel_jsonl(root: Path, records: list[dict], *, size: tuple[int, int] = (640, 480)) -> Path:
    (root / "imgs").mkdir(exist_ok=True)
    Image.new("RGB", size).save(root / "imgs" / "a.png")
    path = root / "pixels.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def x(value: float) -> int:
    return pixel_to_bin(value, 640)


def y(value: float) -> int:
    return pixel_to_bin(value, 480)


def pixel_record(objects: list[dict], **extra: object) -> dict:
    return {"images": ["imgs/a.png"], "width": 640, "height": 480, "objects": objects, **extra}


def test_worked_example_of_spec_01_1_2(tmp_path: Path) -> None:
    src = write_pixel_jsonl(tmp_path, [pixel_record([{"desc": "black cat", "bbox_2d": [32, 48, 320, 240]}])])
    summary = convert_pixel_jsonl(src, tmp_path / "out.jsonl")
    line = json.loads((tmp_path / "out.jsonl").read_text())
    assert line["objects"] == [{"desc": "black cat", "bbox_2d": [50, 100, 500, 501]}]
    assert summary.counts["records"] == 1 and summary.counts["bbox_2d"] == 1
    convert_pixel_jsonl(src, tmp_path / "tokens.jsonl", coord_form="token")
    tokens = json.loads((tmp_path / "tokens.jsonl").read_text())["objects"][0]["bbox_2d"]
    assert tokens == ["<|coord_50|>", "<|coord_100|>", "<|coord_500|>", "<|coord_501|>"]
    for name in ("out.jsonl", "tokens.jsonl"):
        record = load_jsonl(
            tmp_path / name, max_pixels=640 * 480, trainer_variant="stage1", field_order="desc_first"
        )[0]
        assert record.objects[0].values == (50, 100, 500, 501)


def test_output_is_sorted_canonical_and_keeps_record_fields(tmp_path: Path) -> None:
    objects = [
        {"desc": "low", "bbox_2d": [0, 400, 10, 410]},
        # counter-clockwise triangle starting at a non-minimal vertex, pixels on a 640x480 image
        {"desc": "tri", "poly": [100.0, 150.0, 200, 50, 100, 50], "poly_points": 3},
        {"desc": "edge", "bbox_2d": [600, 0, 640, 480]},
    ]
    src = write_pixel_jsonl(tmp_path, [pixel_record(objects, id=7, metadata={"src": "x"}, summary="three")])
    summary = convert_pixel_jsonl(src, tmp_path / "out.jsonl")
    record = json.loads((tmp_path / "out.jsonl").read_text())
    assert list(record) == ["id", "images", "width", "height", "objects", "summary", "metadata"]
    assert (record["id"], record["metadata"], record["summary"]) == (7, {"src": "x"}, "three")
    assert [o["desc"] for o in record["objects"]] == ["edge", "tri", "low"]
    assert record["objects"][0]["bbox_2d"] == [x(600), 0, 999, 999]
    assert record["objects"][1]["poly"] == [x(100), y(50), x(200), y(50), x(100), y(150)]
    assert summary.counts["poly_canonicalized"] == 1 and summary.counts["reordered_records"] == 1
    assert validate_jsonl(tmp_path / "out.jsonl").ok


def test_bbox_only_exports_polygons_as_boxes(tmp_path: Path) -> None:
    src = write_pixel_jsonl(tmp_path, [pixel_record([{"desc": "tri", "poly": [100, 150, 200, 50, 100, 50]}])])
    convert_pixel_jsonl(src, tmp_path / "out.jsonl", bbox_only=True)
    obj = json.loads((tmp_path / "out.jsonl").read_text())["objects"][0]
    assert obj == {
        "desc": "tri",
        "bbox_2d": [
            pixel_to_bin(100, 640),
            pixel_to_bin(50, 480),
            pixel_to_bin(200, 640),
            pixel_to_bin(150, 480),
        ],
    }
    assert load_jsonl(
        tmp_path / "out.jsonl",
        max_pixels=None,
        trainer_variant="stage2_two_channel",
        field_order="desc_first",
    )


@pytest.mark.parametrize(
    "obj,rule",
    [
        ({"desc": "a", "bbox_2d": [0, 0, 641, 10]}, "pixel_range"),
        ({"desc": "a", "bbox_2d": [-0.5, 0, 10, 10]}, "pixel_range"),
        ({"desc": "a", "poly": [0, 0, 10, 481, 5, 5]}, "pixel_range"),
        ({"desc": "a", "bbox_2d": [0, 0, "10", 10]}, "pixel_range"),
        ({"desc": "a", "bbox_2d": [20, 0, 10, 10]}, "bbox_inverted"),
        ({"desc": "a", "poly": [0, 0, 0.1, 0, 0, 0.1]}, "poly_arity"),  # collapses at 1000 bins
        ({"desc": " ", "bbox_2d": [0, 0, 1, 1]}, "desc_empty"),
        ({"desc": "a", "bbox": [0, 0, 1, 1]}, "legacy_key"),
    ],
)
def test_pixel_errors_name_file_line_and_rule(tmp_path: Path, obj: dict, rule: str) -> None:
    src = write_pixel_jsonl(tmp_path, [pixel_record([]), pixel_record([obj])])
    with pytest.raises(DataContractError) as info:
        convert_pixel_jsonl(src, tmp_path / "out.jsonl")
    assert (info.value.rule, info.value.line, info.value.object_index) == (rule, 2, 0)
    assert not (tmp_path / "out.jsonl").exists()


def test_images_must_stay_inside_the_output_directory(tmp_path: Path) -> None:
    src = write_pixel_jsonl(tmp_path, [pixel_record([])])
    with pytest.raises(DataContractError, match="outside the output directory"):
        convert_pixel_jsonl(src, tmp_path / "elsewhere" / "out.jsonl")
    convert_pixel_jsonl(src, tmp_path / "out.jsonl")
    assert json.loads((tmp_path / "out.jsonl").read_text())["images"] == ["imgs/a.png"]


def test_conversion_is_deterministic(tmp_path: Path) -> None:
    src = write_pixel_jsonl(
        tmp_path, [pixel_record([{"desc": 'é "q"', "poly": [5, 5, 50, 5, 5, 50]}]), pixel_record([])]
    )
    convert_pixel_jsonl(src, tmp_path / "a.jsonl", coord_form="token")
    convert_pixel_jsonl(src, tmp_path / "b.jsonl", coord_form="token")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert "é" in (tmp_path / "a.jsonl").read_text(encoding="utf-8")


def test_bad_options(tmp_path: Path) -> None:
    src = write_pixel_jsonl(tmp_path, [pixel_record([])])
    with pytest.raises(ConfigError, match="coord_form"):
        convert_pixel_jsonl(src, tmp_path / "out.jsonl", coord_form="float")
    with pytest.raises(ConfigError):
        convert_pixel_jsonl(src, src)


def coco_doc() -> dict:
    return {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 640, "height": 480},
            {"id": 2, "file_name": "b.png", "width": 100, "height": 100},
        ],
        "categories": [{"id": 3, "name": "cat"}, {"id": 5, "name": "road sign"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 3, "bbox": [32, 48, 288, 192], "iscrowd": 0},
            {
                "id": 11,
                "image_id": 1,
                "category_id": 5,
                "bbox": [0, 0, 100, 100],
                "segmentation": [[0, 0, 100, 0, 100, 100, 0, 100]],
            },
            {
                "id": 12,
                "image_id": 1,
                "category_id": 5,
                "bbox": [10, 300, 10, 10],
                "segmentation": [[10, 300, 20, 300, 20, 310], [12, 302, 14, 302, 14, 304]],
            },
            {
                "id": 13,
                "image_id": 1,
                "category_id": 3,
                "bbox": [0, 200, 10, 10],
                "segmentation": {"counts": "abc", "size": [480, 640]},
            },
            {
                "id": 14,
                "image_id": 1,
                "category_id": 3,
                "bbox": [0, 0, 5, 5],
                "iscrowd": 1,
                "segmentation": {"counts": "abc", "size": [480, 640]},
            },
        ],
    }


def write_coco(root: Path, doc: dict) -> Path:
    path = root / "annotations.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_coco_conversion(tmp_path: Path) -> None:
    summary = convert_coco(write_coco(tmp_path, coco_doc()), tmp_path / "out.jsonl")
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [line["id"] for line in lines] == [1, 2]
    assert lines[1]["objects"] == [] and lines[1]["images"] == ["b.png"]
    assert lines[0]["metadata"] == {"coco_image_id": 1}
    first = lines[0]["objects"]
    assert [o["desc"] for o in first] == ["road sign", "cat", "cat", "road sign"]
    assert first[0] == {
        "desc": "road sign",
        "poly": [
            0,
            0,
            pixel_to_bin(100, 640),
            0,
            pixel_to_bin(100, 640),
            pixel_to_bin(100, 480),
            0,
            pixel_to_bin(100, 480),
        ],
    }
    assert first[1] == {"desc": "cat", "bbox_2d": [50, 100, 500, 501]}
    assert list(first[3]) == ["desc", "bbox_2d"]  # multipart polygon exported as its bbox
    counts = summary.counts
    assert (
        counts["skipped_crowd"],
        counts["poly_as_bbox_multipart"],
        counts["poly_as_bbox_rle"],
        counts["poly_as_bbox_missing"],
    ) == (1, 1, 1, 1)
    assert (counts["records"], counts["objects"], counts["poly"], counts["bbox_2d"]) == (2, 4, 1, 3)
    report = validate_jsonl(tmp_path / "out.jsonl", check_images=False)
    assert report.ok and report.num_objects == 4


def test_coco_bbox_geometry_and_crowd(tmp_path: Path) -> None:
    summary = convert_coco(
        write_coco(tmp_path, coco_doc()),
        tmp_path / "out.jsonl",
        geometry="bbox",
        include_crowd=True,
        coord_form="token",
    )
    assert summary.counts["poly"] == 0 and summary.counts["objects"] == 5
    assert "<|coord_501|>" in (tmp_path / "out.jsonl").read_text()


def test_coco_errors_name_the_field(tmp_path: Path) -> None:
    doc = coco_doc()
    doc["annotations"][1]["category_id"] = 99
    with pytest.raises(DataContractError, match=r"annotations\[1\]\.category_id"):
        convert_coco(write_coco(tmp_path, doc), tmp_path / "out.jsonl")
    doc = coco_doc()
    doc["annotations"][0]["bbox"] = [600, 0, 41, 10]
    with pytest.raises(DataContractError) as info:
        convert_coco(write_coco(tmp_path, doc), tmp_path / "out.jsonl")
    assert info.value.rule == "pixel_range" and info.value.file == str(tmp_path / "annotations.json")
    summary = convert_coco(write_coco(tmp_path, doc), tmp_path / "out.jsonl", clip_to_image=True)
    assert summary.counts["clipped_coords"] == 1
    (tmp_path / "annotations.json").write_text('{"images": [}')
    with pytest.raises(DataContractError, match=r"annotations\.json:1:13"):
        convert_coco(tmp_path / "annotations.json", tmp_path / "out.jsonl")
