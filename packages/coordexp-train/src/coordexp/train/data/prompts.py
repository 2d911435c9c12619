"""Prompt resolution (spec 01 §1.5): `resolve_prompt(variant, ordering, field_order) -> PromptPair`.

The result is a pure function of its three arguments, so training, rollouts, eval and inference get
byte-identical text; `prompt_sha256` is what the run manifest records. Variants come from the
built-ins (`default`, `coco_80`) and from the entry-point group `coordexp.prompts`, where the entry
name is the variant name and the value loads to `callable(ordering, field_order) -> PromptPair`.
Only the requested entry point is imported, so an unrelated broken plugin never blocks a run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from importlib import metadata

import attrs

from coordexp.core.errors import ConfigError, PluginError
from coordexp.train.data.coco80 import COCO_80_NAMES
from coordexp.train.data.options import check_field_order, check_ordering

ENTRY_POINT_GROUP = "coordexp.prompts"


def _nonempty_str(instance: object, attribute: attrs.Attribute, value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"PromptPair.{attribute.name} must be a non-empty string, got {value!r}")


@attrs.frozen
class PromptPair:
    """The system and user text of a detection prompt (the user turn also carries the image)."""

    system: str = attrs.field(validator=_nonempty_str)
    user: str = attrs.field(validator=_nonempty_str)


PromptFactory = Callable[[str, str], PromptPair]

_INTRO = (
    'You are an object detector. Reply with exactly one JSON object of the form {"objects": [...]} '
    "and nothing else."
)
_KEYS_DESC_FIRST = (
    'Each element of "objects" has exactly two keys, in this order: "desc" (a short description) '
    'and either "bbox_2d" or "poly".'
)
_KEYS_GEOMETRY_FIRST = (
    'Each element of "objects" has exactly two keys, in this order: either "bbox_2d" or "poly", '
    'and "desc" (a short description).'
)
_COORDS = (
    "Write every coordinate only as a bare token <|coord_N|>, N an integer from 0 to 999; "
    "0 is the left/top edge and 999 the right/bottom edge."
)
_BBOX = '"bbox_2d" is [x1, y1, x2, y2] with x1 <= x2 and y1 <= y2.'
_POLY = (
    '"poly" is a flat list [x1, y1, x2, y2, ...] of at least 3 vertices in boundary order, '
    "starting at the top-most (then left-most) vertex and going clockwise."
)
_LIST_SORTED = (
    "List every clearly visible object, ordered top to bottom and then left to right by the box's "
    "top-left corner (a polygon's first vertex)."
)
_LIST_RANDOM = "List every clearly visible object, in any order."
_LAYOUT = 'Write the JSON on one line with one space after every ":" and ",".'
_EXAMPLE_COORDS = "[<|coord_50|>, <|coord_100|>, <|coord_500|>, <|coord_501|>]"
_EXAMPLE = {
    "desc_first": '{"desc": "black cat", "bbox_2d": ' + _EXAMPLE_COORDS + "}",
    "geometry_first": '{"bbox_2d": ' + _EXAMPLE_COORDS + ', "desc": "black cat"}',
}
_COCO_LINE = 'Use one of these names for "desc": ' + ", ".join(COCO_80_NAMES)


def default_prompt(ordering: str, field_order: str) -> PromptPair:
    """The built-in `default` variant (spec 01 §1.5 text; lines joined by "\\n", no final newline)."""
    check_ordering(ordering)
    check_field_order(field_order)
    system = "\n".join(
        (
            _INTRO,
            _KEYS_DESC_FIRST if field_order == "desc_first" else _KEYS_GEOMETRY_FIRST,
            _COORDS,
            _BBOX,
            _POLY,
            _LIST_SORTED if ordering == "sorted" else _LIST_RANDOM,
            _LAYOUT,
        )
    )
    user = "Detect all objects in the image. Example element: " + _EXAMPLE[field_order]
    return PromptPair(system=system, user=user)


def coco80_prompt(ordering: str, field_order: str) -> PromptPair:
    """The built-in `coco_80` variant: `default` plus a final system line naming the 80 COCO classes."""
    base = default_prompt(ordering, field_order)
    return PromptPair(system=base.system + "\n" + _COCO_LINE, user=base.user)


BUILTIN_PROMPTS: dict[str, PromptFactory] = {"default": default_prompt, "coco_80": coco80_prompt}


def _entry_points() -> dict[str, list[metadata.EntryPoint]]:
    found: dict[str, list[metadata.EntryPoint]] = {}
    seen: set[tuple[str, str, str]] = set()
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        identity = (ep.name, _dist_name(ep), ep.value)
        if identity not in seen:  # one distribution visible through two sys.path entries
            seen.add(identity)
            found.setdefault(ep.name, []).append(ep)
    return found


def _dist_name(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.name if dist is not None else "<unknown distribution>"


def _qualified(factory: PromptFactory) -> str:
    return f"{factory.__module__}:{factory.__qualname__}"


def available_prompt_variants() -> dict[str, str]:
    """Map every known variant name to where it comes from ("builtin" or the distribution name)."""
    names = {name: "builtin" for name in BUILTIN_PROMPTS}
    for name, eps in _entry_points().items():
        if name not in names:
            names[name] = ", ".join(sorted(_dist_name(ep) for ep in eps))
    return dict(sorted(names.items()))


def _load_factory(variant: str) -> PromptFactory:
    eps = _entry_points().get(variant, [])
    if variant in BUILTIN_PROMPTS:
        builtin = BUILTIN_PROMPTS[variant]
        shadowing = [ep for ep in eps if ep.value.replace(" ", "") != _qualified(builtin)]
        if shadowing:
            raise PluginError(
                f"prompt variant {variant!r} is built in, but distribution "
                f"{_dist_name(shadowing[0])} also registers it in {ENTRY_POINT_GROUP!r} "
                f"({shadowing[0].value}); rename the plugin's entry point"
            )
        return builtin
    if not eps:
        listing = ", ".join(f"{n} ({src})" for n, src in available_prompt_variants().items())
        raise ConfigError(
            "custom.prompt_variant", f"unknown prompt variant {variant!r}; available: {listing}"
        )
    if len(eps) > 1:
        dists = ", ".join(sorted(_dist_name(ep) for ep in eps))
        raise PluginError(f"prompt variant {variant!r} is registered by several distributions: {dists}")
    ep = eps[0]
    try:
        factory = ep.load()
    except Exception as exc:  # any import-time failure of a third-party plugin is reported, not hidden
        raise PluginError(
            f"prompt variant {variant!r} from {_dist_name(ep)} ({ep.value}) failed to load: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not callable(factory):
        raise PluginError(
            f"prompt variant {variant!r} from {_dist_name(ep)} resolves to {factory!r}, "
            "expected a callable(ordering, field_order) -> PromptPair"
        )
    return factory


def resolve_prompt(variant: str, ordering: str, field_order: str) -> PromptPair:
    """Return the byte-exact (system, user) text of `variant` for this ordering and field order.

    Raises `ConfigError` for an unknown variant (listing the available ones) or a bad
    ordering/field order, and `PluginError` when a plugin fails or returns something else
    than a `PromptPair` / `(system, user)` pair of non-empty strings.
    """
    check_ordering(ordering)
    check_field_order(field_order)
    if not isinstance(variant, str):
        raise ConfigError("custom.prompt_variant", f"got {variant!r}; expected a variant name (str)")
    factory = _load_factory(variant)
    result = factory(ordering, field_order)
    if isinstance(result, PromptPair):
        return result
    if isinstance(result, tuple) and len(result) == 2:
        try:
            return PromptPair(system=result[0], user=result[1])
        except ValueError as exc:
            raise PluginError(f"prompt variant {variant!r} returned an invalid pair: {exc}") from exc
    raise PluginError(
        f"prompt variant {variant!r} returned {type(result).__name__}; expected PromptPair(system, user)"
    )


def prompt_sha256(pair: PromptPair) -> str:
    """Hex sha256 of the UTF-8 canonical JSON `{"system": ..., "user": ...}` (sorted keys, no spaces)."""
    payload = json.dumps(
        {"system": pair.system, "user": pair.user}, sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()
