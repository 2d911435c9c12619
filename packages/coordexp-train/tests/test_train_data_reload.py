"""Reloading in one process: image headers are read once per unchanged file, and a JSONL file
whose bytes and images are unchanged is not checked again; any change is noticed and checked."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from coordexp.core.errors import DataContractError
from coordexp.train.data import load_jsonl
from coordexp.train.data import images as images_module
from coordexp.train.data import jsonl as jsonl_module


def _write(tmp: Path, n: int, size: tuple[int, int] = (64, 48)) -> Path:
    lines = []
    for i in range(n):
        Image.new("RGB", size, (90, 90, 90)).save(tmp / f"{i}.bmp")
        record = {"images": [f"{i}.bmp"], "width": size[0], "height": size[1], "objects": []}
        lines.append(json.dumps(record) + "\n")
    path = tmp / "data.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    return path


def _load(path: Path):
    return load_jsonl(path, max_pixels=1 << 20, trainer_variant="stage1", field_order="desc_first")


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    calls: list[Path] = []
    real_open = images_module.Image.open

    def counting_open(path, *args, **kwargs):
        calls.append(Path(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(images_module.Image, "open", counting_open)
    return calls


def test_a_second_load_opens_no_image(tmp_path: Path, opened: list[Path]) -> None:
    path = _write(tmp_path, 5)
    assert len(_load(path)) == 5
    assert sorted(p.name for p in opened) == [f"{i}.bmp" for i in range(5)]
    opened.clear()
    assert len(_load(path)) == 5
    assert opened == []


def test_a_rewritten_image_is_read_again(tmp_path: Path, opened: list[Path]) -> None:
    path = _write(tmp_path, 3)
    _load(path)
    image = tmp_path / "1.bmp"
    stat = image.stat()
    Image.new("RGB", (32, 32)).save(image)  # another size (and file size), same name
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old mtime
    opened.clear()
    with pytest.raises(DataContractError) as info:
        _load(path)
    assert info.value.rule == "image_size" and info.value.line == 2
    assert [p.name for p in opened] == ["1.bmp"]


def test_a_removed_image_is_missing_not_remembered(tmp_path: Path) -> None:
    path = _write(tmp_path, 2)
    _load(path)
    (tmp_path / "0.bmp").unlink()
    with pytest.raises(DataContractError) as info:
        _load(path)
    assert info.value.rule == "image_path" and info.value.line == 1


@pytest.fixture
def checked(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    lines: list[int] = []
    real_check = jsonl_module.check_record

    def counting_check(raw, *, line, **kwargs):
        lines.append(line)
        return real_check(raw, line=line, **kwargs)

    monkeypatch.setattr(jsonl_module, "check_record", counting_check)
    return lines


def test_a_second_load_checks_no_record(tmp_path: Path, checked: list[int]) -> None:
    path = _write(tmp_path, 4)
    first = _load(path)
    assert checked == [1, 2, 3, 4]
    checked.clear()
    again = _load(path)
    assert checked == [] and again.records == first.records
    # another rule set (ordering) is another scan
    load_jsonl(path, max_pixels=1 << 20, trainer_variant="stage1", field_order="desc_first", ordering="random")
    assert checked == [1, 2, 3, 4]


def test_a_changed_file_is_checked_again(tmp_path: Path, checked: list[int]) -> None:
    path = _write(tmp_path, 3)
    _load(path)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + lines[1].replace('"width": 64', '"width": 65') + lines[2])  # same size
    checked.clear()
    with pytest.raises(DataContractError) as info:
        _load(path)
    assert info.value.rule == "image_size" and info.value.line == 2
    assert checked == [1, 2]


def test_a_changed_image_makes_the_file_checked_again(tmp_path: Path, checked: list[int]) -> None:
    path = _write(tmp_path, 3)
    _load(path)
    Image.new("RGB", (32, 32)).save(tmp_path / "2.bmp")
    checked.clear()
    with pytest.raises(DataContractError) as info:
        _load(path)
    assert info.value.rule == "image_size" and info.value.line == 3
    assert checked == [1, 2, 3]


def test_too_long_checks_are_never_remembered(tmp_path: Path, checked: list[int]) -> None:
    path = _write(tmp_path, 2)
    for _ in range(2):
        load_jsonl(
            path, max_pixels=1 << 20, trainer_variant="stage1", field_order="desc_first",
            length_fn=lambda record: 10, max_length=100,
        )
    assert checked == [1, 2, 1, 2]
