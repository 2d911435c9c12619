"""Assistant text and chat messages (spec 01 §1.3, §1.5)."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from coordexp.core.coordjson.serialize import CoordObject
from coordexp.train.data import assistant_text, build_messages, load_jsonl, resolve_prompt


def test_assistant_text_matches_the_spec_examples(tmp_path: Path) -> None:
    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    record = {
        "images": ["a.png"],
        "width": 32,
        "height": 32,
        "objects": [
            {"desc": "mug", "bbox_2d": [610, 420, 700, 555]},
            {"desc": "road sign", "poly": [240, 260, 360, 260, 300, 200]},  # canonicalized on load
        ],
    }
    (tmp_path / "d.jsonl").write_text(json.dumps(record) + "\n")
    loaded = load_jsonl(
        tmp_path / "d.jsonl", max_pixels=None, trainer_variant="stage1", field_order="desc_first"
    )[0]
    assert assistant_text(loaded, "desc_first") == (
        '{"objects": [{"desc": "road sign", "poly": [<|coord_300|>, <|coord_200|>, <|coord_360|>, '
        '<|coord_260|>, <|coord_240|>, <|coord_260|>]}, {"desc": "mug", "bbox_2d": [<|coord_610|>, '
        "<|coord_420|>, <|coord_700|>, <|coord_555|>]}]}"
    )
    cat = CoordObject("black cat", "bbox_2d", (50, 100, 500, 501))
    assert assistant_text([cat], "geometry_first") == (
        '{"objects": [{"bbox_2d": [<|coord_50|>, <|coord_100|>, <|coord_500|>, <|coord_501|>], '
        '"desc": "black cat"}]}'
    )
    assert assistant_text([], "desc_first") == '{"objects": []}'


def test_build_messages_in_qwen_format(tmp_path: Path) -> None:
    pair = resolve_prompt("default", "sorted", "desc_first")
    messages = build_messages(pair, tmp_path / "a.png", assistant='{"objects": []}')
    assert messages == [
        {"role": "system", "content": [{"type": "text", "text": pair.system}]},
        {
            "role": "user",
            "content": [
                {"type": "image", "image": str(tmp_path / "a.png")},
                {"type": "text", "text": pair.user},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": '{"objects": []}'}]},
    ]
    image = Image.new("RGB", (32, 32))
    prompt_only = build_messages(pair, image)
    assert len(prompt_only) == 2 and prompt_only[1]["content"][0]["image"] is image
