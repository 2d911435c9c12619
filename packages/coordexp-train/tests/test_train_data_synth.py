"""Synthetic data: deterministic per seed, different across seeds, always valid contract JSONL."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image

from coordexp.core.errors import ConfigError
from coordexp.train.data import load_jsonl, synthesize, validate_jsonl


def digest_tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_identical_bytes_and_other_seeds_differ(tmp_path: Path) -> None:
    synthesize(tmp_path / "a", n_train=12, n_val=4, seed=3)
    synthesize(tmp_path / "b", n_train=12, n_val=4, seed=3)
    synthesize(tmp_path / "c", n_train=12, n_val=4, seed=4)
    a, b, c = (digest_tree(tmp_path / n) for n in "abc")
    assert a == b and len(a) == 12 + 4 + 2
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in ("train.jsonl", "val.jsonl"))
    assert sum(a[k] != c[k] for k in a) > len(a) // 2


def test_worker_processes_write_the_same_bytes_and_counts(tmp_path: Path) -> None:
    one = synthesize(tmp_path / "one", n_train=40, n_val=9, seed=5, max_objects=4)
    three = synthesize(tmp_path / "three", n_train=40, n_val=9, seed=5, max_objects=4, workers=3)
    assert digest_tree(tmp_path / "one") == digest_tree(tmp_path / "three")
    assert one.counts == three.counts and one.counts["objects"] > 0


def test_bmp_images_hold_the_png_pixels(tmp_path: Path) -> None:
    png = synthesize(tmp_path / "png", n_train=6, n_val=2, seed=2)
    bmp = synthesize(tmp_path / "bmp", n_train=6, n_val=2, seed=2, image_format="bmp")
    for split in ("train", "val"):
        png_lines = getattr(png, f"{split}_jsonl").read_text()
        assert getattr(bmp, f"{split}_jsonl").read_text() == png_lines.replace(".png", ".bmp")
        assert report_ok(getattr(bmp, f"{split}_jsonl"))
    names = sorted(p.relative_to(tmp_path / "bmp") for p in (tmp_path / "bmp" / "images").rglob("*.*"))
    expected = [f"images/{split}/{i:05d}.bmp" for split, n in (("train", 6), ("val", 2)) for i in range(n)]
    assert [str(n) for n in names] == expected
    for name in names:
        with Image.open(tmp_path / "bmp" / name) as image:
            assert image.format == "BMP"
            bmp_pixels = image.convert("RGB").tobytes()
        with Image.open((tmp_path / "png" / name).with_suffix(".png")) as image:
            assert image.format == "PNG" and image.convert("RGB").tobytes() == bmp_pixels


def report_ok(path: Path) -> bool:
    return validate_jsonl(path, max_pixels=256 * 256, trainer_variant="stage1").ok


def test_cli_offers_every_image_format() -> None:
    from coordexp.train.cli.main import build_parser
    from coordexp.train.data.synth import IMAGE_FORMATS

    parser = build_parser()
    synth = ["data", "synth", "--out", "x"]
    assert parser.parse_args(synth).image_format == "png"
    for name in IMAGE_FORMATS:
        assert parser.parse_args([*synth, "--image-format", name]).image_format == name
    with pytest.raises(SystemExit):
        parser.parse_args([*synth, "--image-format", "gif"])


def test_image_i_does_not_depend_on_split_length(tmp_path: Path) -> None:
    synthesize(tmp_path / "small", n_train=3, n_val=1, seed=9)
    synthesize(tmp_path / "large", n_train=8, n_val=2, seed=9)
    small, large = digest_tree(tmp_path / "small"), digest_tree(tmp_path / "large")
    assert all(large[k] == v for k, v in small.items() if k.startswith("images/"))
    assert (
        (tmp_path / "large" / "train.jsonl")
        .read_text()
        .startswith((tmp_path / "small" / "train.jsonl").read_text())
    )


def test_files_validate_and_have_the_promised_content(tmp_path: Path) -> None:
    result = synthesize(tmp_path, n_train=60, n_val=10, seed=0, max_objects=6, empty_fraction=0.1)
    for path in (result.train_jsonl, result.val_jsonl):
        report = validate_jsonl(path, max_pixels=256 * 256, trainer_variant="stage1")
        assert report.ok, report.errors[:3]
    dataset = load_jsonl(
        result.train_jsonl, max_pixels=256 * 256, trainer_variant="stage1", field_order="desc_first"
    )
    assert len(dataset) == 60
    descs = {o.desc for r in dataset for o in r.objects}
    assert {d.split()[1] for d in descs} == {"square", "circle", "triangle"}
    assert {d.split()[0] for d in descs} <= {"red", "green", "blue", "yellow"}
    assert {o.geom_key for r in dataset for o in r.objects if o.desc.endswith("triangle")} == {"poly"}
    assert {o.geom_key for r in dataset for o in r.objects if not o.desc.endswith("triangle")} == {"bbox_2d"}
    counts = [len(r.objects) for r in dataset]
    assert 0 in counts and max(counts) <= 6 and len(set(counts)) >= 4
    for record in dataset:
        assert record.width % 32 == 0 and record.height % 32 == 0
        assert Image.open(record.image).size == (record.width, record.height)
        for obj in record.objects:
            xs, ys = obj.values[0::2], obj.values[1::2]
            assert max(xs) - min(xs) >= 100 and max(ys) - min(ys) >= 100  # >= ~15 % of the image side


def test_objects_are_drawn_where_the_labels_say(tmp_path: Path) -> None:
    result = synthesize(tmp_path, n_train=10, n_val=0, seed=5)
    dataset = load_jsonl(
        result.train_jsonl, max_pixels=None, trainer_variant="stage1", field_order="desc_first"
    )
    colours = {"red": (225, 35, 35), "green": (30, 180, 55), "blue": (35, 75, 235), "yellow": (245, 215, 30)}
    checked = 0
    for record in dataset:
        image = Image.open(record.image).convert("RGB")
        for obj in record.objects:
            if obj.geom_key != "bbox_2d" or not obj.desc.endswith("square"):
                continue
            x1, y1, x2, y2 = obj.values
            cx = round((x1 + x2) / 2 * (record.width - 1) / 999)
            cy = round((y1 + y2) / 2 * (record.height - 1) / 999)
            pixel = image.getpixel((cx, cy))
            # the centre shows the labelled colour unless a later shape covers it
            checked += pixel == colours[obj.desc.split()[0]]
    assert checked >= 3


def test_bbox_only_mode_has_no_polygons(tmp_path: Path) -> None:
    result = synthesize(tmp_path, n_train=20, n_val=2, seed=1, bbox_only=True, coord_form="token")
    assert '"poly"' not in result.train_jsonl.read_text()
    assert "<|coord_" in result.train_jsonl.read_text()
    assert validate_jsonl(result.train_jsonl, trainer_variant="stage2_two_channel").ok


@pytest.mark.parametrize("size_range", [(0.3, 0.6), (0.5, 0.5)])
def test_object_sides_stay_inside_size_range(tmp_path: Path, size_range: tuple[float, float]) -> None:
    result = synthesize(tmp_path, n_train=30, n_val=0, seed=2, bbox_only=True, size_range=size_range)
    sides = []
    for line in result.train_jsonl.read_text().splitlines():
        record = json.loads(line)
        short = min(record["width"], record["height"])
        for obj in record["objects"]:
            x0, _, x1, _ = obj["bbox_2d"]
            # bins are norm1000 of inclusive pixel boxes: the side comes back within a pixel or two
            sides.append((x1 - x0) / 1000 * record["width"] / short)
    assert sides
    lo, hi = size_range
    assert min(sides) >= lo - 2.5 / 128 and max(sides) <= hi + 2.5 / 128


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_train": -1},
        {"image_sizes": ((100, 128),)},
        {"max_objects": 0},
        {"empty_fraction": 1.5},
        {"coord_form": "pixels"},
        {"size_range": (0.5, 0.3)},
        {"size_range": (0.0, 0.3)},
        {"size_range": (0.3, 1.2)},
        {"size_range": (0.3,)},
        {"workers": 0},
        {"workers": True},
        {"image_format": "jpeg"},
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict) -> None:
    options = {"n_train": 1, "n_val": 1, "seed": 0, **kwargs}
    with pytest.raises(ConfigError):
        synthesize(tmp_path, **options)
