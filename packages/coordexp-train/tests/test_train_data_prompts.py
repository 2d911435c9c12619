"""Prompts (spec 01 §1.5) and B8: byte-exact text, identical across processes, registry errors."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from coordexp.core.errors import ConfigError, PluginError
from coordexp.train.data import PromptPair, available_prompt_variants, prompt_sha256, resolve_prompt
from coordexp.train.data.coco80 import COCO_80_NAMES

# Copied verbatim from spec 01 §1.5 (default, desc_first, sorted).
SPEC_SYSTEM = """\
You are an object detector. Reply with exactly one JSON object of the form {"objects": [...]} and nothing else.
Each element of "objects" has exactly two keys, in this order: "desc" (a short description) and either "bbox_2d" or "poly".
Write every coordinate only as a bare token <|coord_N|>, N an integer from 0 to 999; 0 is the left/top edge and 999 the right/bottom edge.
"bbox_2d" is [x1, y1, x2, y2] with x1 <= x2 and y1 <= y2.
"poly" is a flat list [x1, y1, x2, y2, ...] of at least 3 vertices in boundary order, starting at the top-most (then left-most) vertex and going clockwise.
List every clearly visible object, ordered top to bottom and then left to right by the box's top-left corner (a polygon's first vertex).
Write the JSON on one line with one space after every ":" and ","."""  # noqa: E501
SPEC_USER = (
    'Detect all objects in the image. Example element: {"desc": "black cat", '
    '"bbox_2d": [<|coord_50|>, <|coord_100|>, <|coord_500|>, <|coord_501|>]}'
)
ORDER_LINE = SPEC_SYSTEM.splitlines()[1]
LIST_LINE = SPEC_SYSTEM.splitlines()[5]


def test_default_prompt_is_byte_exact() -> None:
    pair = resolve_prompt("default", "sorted", "desc_first")
    assert pair.system.encode("utf-8") == SPEC_SYSTEM.encode("utf-8")
    assert pair.user.encode("utf-8") == SPEC_USER.encode("utf-8")


def test_geometry_first_swaps_order_sentence_and_example() -> None:
    pair = resolve_prompt("default", "sorted", "geometry_first")
    lines = pair.system.splitlines()
    assert lines[1] == (
        'Each element of "objects" has exactly two keys, in this order: either "bbox_2d" or "poly", '
        'and "desc" (a short description).'
    )
    assert lines[:1] + lines[2:] == SPEC_SYSTEM.splitlines()[:1] + SPEC_SYSTEM.splitlines()[2:]
    assert pair.user == (
        "Detect all objects in the image. Example element: "
        '{"bbox_2d": [<|coord_50|>, <|coord_100|>, <|coord_500|>, <|coord_501|>], "desc": "black cat"}'
    )


def test_random_ordering_replaces_the_ordering_clause() -> None:
    pair = resolve_prompt("default", "random", "desc_first")
    assert pair.system == SPEC_SYSTEM.replace(LIST_LINE, "List every clearly visible object, in any order.")
    assert pair.user == SPEC_USER


def test_coco_80_appends_the_official_names() -> None:
    pair = resolve_prompt("coco_80", "sorted", "desc_first")
    head, last = pair.system.rsplit("\n", 1)
    assert head == SPEC_SYSTEM and pair.user == SPEC_USER
    assert last.startswith('Use one of these names for "desc": person, bicycle, car, motorcycle, airplane,')
    assert last.endswith("teddy bear, hair drier, toothbrush")
    assert last.removeprefix('Use one of these names for "desc": ').split(", ") == list(COCO_80_NAMES)


def test_all_variants_differ_and_hash_distinctly() -> None:
    hashes = {
        prompt_sha256(resolve_prompt(v, o, f))
        for v in ("default", "coco_80", "compact", "minimal")
        for o in ("sorted", "random")
        for f in ("desc_first", "geometry_first")
    }
    assert len(hashes) == 16


def test_compact_variant_is_registered_by_coordexp_train() -> None:
    assert available_prompt_variants()["compact"] == "coordexp-train"
    pair = resolve_prompt("compact", "sorted", "desc_first")
    assert pair.system == (
        'Reply {"objects": [...]}; element {"desc": ..., "bbox_2d"|"poly": [<|coord_N|>, ...]}; '
        "objects top to bottom, then left to right."
    )
    assert pair.user == "Detect all objects in the image."
    geometry_first = resolve_prompt("compact", "random", "geometry_first").system
    assert '{"bbox_2d"|"poly": [<|coord_N|>, ...], "desc": ...}' in geometry_first
    assert geometry_first.endswith("objects in any order.")
    default = resolve_prompt("default", "sorted", "desc_first")
    assert len(pair.system) + len(pair.user) < (len(default.system) + len(default.user)) / 4


def test_minimal_variant_names_format_field_order_and_ordering() -> None:
    assert available_prompt_variants()["minimal"] == "coordexp-train"
    pair = resolve_prompt("minimal", "sorted", "desc_first")
    assert pair == PromptPair(system="CoordJSON, desc first, sorted.", user="Detect all objects.")
    assert resolve_prompt("minimal", "random", "geometry_first").system == "CoordJSON, geometry first, any order."
    compact = resolve_prompt("compact", "sorted", "desc_first")
    assert len(pair.system) + len(pair.user) < (len(compact.system) + len(compact.user)) / 3
    with pytest.raises(ConfigError, match="custom.object_ordering"):
        resolve_prompt("minimal", "shuffled", "desc_first")


_SUBPROCESS = textwrap.dedent(
    """
    from coordexp.train.data import prompt_sha256, resolve_prompt
    for v in ("default", "coco_80", "compact"):
        for o in ("sorted", "random"):
            for f in ("desc_first", "geometry_first"):
                print(v, o, f, prompt_sha256(resolve_prompt(v, o, f)))
    """
)


def test_b8_identical_across_processes() -> None:
    expected = "".join(
        f"{v} {o} {f} {prompt_sha256(resolve_prompt(v, o, f))}\n"
        for v in ("default", "coco_80", "compact")
        for o in ("sorted", "random")
        for f in ("desc_first", "geometry_first")
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # a different str-hash seed than this process
    done = subprocess.run(
        [sys.executable, "-c", _SUBPROCESS], capture_output=True, text=True, env=env, check=True, timeout=120
    )
    assert done.stdout == expected


def test_unknown_variant_lists_available_names() -> None:
    with pytest.raises(
        ConfigError, match=r"custom\.prompt_variant.*unknown prompt variant 'nope'.*coco_80.*default"
    ):
        resolve_prompt("nope", "sorted", "desc_first")
    with pytest.raises(ConfigError, match="custom.object_ordering"):
        resolve_prompt("default", "shuffled", "desc_first")
    with pytest.raises(ConfigError, match="custom.object_field_order"):
        resolve_prompt("default", "sorted", "desc_last")


def test_prompt_sha256_is_over_both_texts() -> None:
    a = PromptPair("s", "u")
    assert prompt_sha256(a) == prompt_sha256(PromptPair("s", "u"))
    assert prompt_sha256(a) != prompt_sha256(PromptPair("s", "u "))
    assert prompt_sha256(PromptPair("a b", "c")) != prompt_sha256(PromptPair("a", "b c"))
    with pytest.raises(ValueError):
        PromptPair("", "u")


def _install_plugin(root: Path, dist: str, entries: dict[str, str], module_source: str) -> None:
    """Make a minimal installed distribution (dist-info + module) importable from `root`."""
    module = dist.replace("-", "_")
    (root / f"{module}.py").write_text(module_source)
    info = root / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {value}\n" for name, value in entries.items())
    (info / "entry_points.txt").write_text(f"[coordexp.prompts]\n{lines}")


PLUGIN_SOURCE = textwrap.dedent(
    """
    from coordexp.train.data.prompts import PromptPair

    def terse(ordering, field_order):
        return PromptPair(system=f"Detect ({ordering}, {field_order}).", user="Go.")

    def as_tuple(ordering, field_order):
        return ("sys", "user")

    def wrong(ordering, field_order):
        return "just a string"

    not_callable = 42
    """
)


@pytest.fixture
def plugin_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    _install_plugin(
        tmp_path,
        "prompt-plugin",
        {
            "terse": "prompt_plugin:terse",
            "tuple": "prompt_plugin:as_tuple",
            "wrong": "prompt_plugin:wrong",
            "notcallable": "prompt_plugin:not_callable",
            "broken": "prompt_plugin_missing:thing",
        },
        PLUGIN_SOURCE,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_entry_point_variants(plugin_path: Path) -> None:
    assert resolve_prompt("terse", "random", "geometry_first") == PromptPair(
        "Detect (random, geometry_first).", "Go."
    )
    assert resolve_prompt("tuple", "sorted", "desc_first") == PromptPair("sys", "user")
    variants = available_prompt_variants()
    assert variants["default"] == "builtin" and variants["terse"] == "prompt-plugin"
    for name, match in (
        ("wrong", "returned str"),
        ("notcallable", "expected a callable"),
        ("broken", "failed to load"),
    ):
        with pytest.raises(PluginError, match=match):
            resolve_prompt(name, "sorted", "desc_first")
    with pytest.raises(ConfigError, match=r"terse \(prompt-plugin\)"):
        resolve_prompt("nope", "sorted", "desc_first")


def test_plugin_may_not_shadow_a_builtin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _install_plugin(
        tmp_path,
        "shadow-plugin",
        {"default": "shadow_plugin:mine"},
        "def mine(ordering, field_order):\n    return ('a', 'b')\n",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match="built in"):
        resolve_prompt("default", "sorted", "desc_first")
    assert resolve_prompt("coco_80", "sorted", "desc_first").user == SPEC_USER
