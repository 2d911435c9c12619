"""The `compact` prompt variant: the default prompt's contract in about a fifth of the tokens.

Registered through the `coordexp.prompts` entry point (like any third-party variant), not as a
built-in, so the spec's built-in set stays `default` + `coco_80`. It exists for small models
trained from scratch (the demo): the default system text is ~260 of ~400 tokens of a synthetic
sample, and every prompt token costs attention and packing room without carrying information
that a model which never read English can use. Same output contract: CoordJSON, coordinate
tokens, the configured field order and object ordering.
"""

from __future__ import annotations

from coordexp.train.data.options import check_field_order, check_ordering
from coordexp.train.data.prompts import PromptPair

_ELEMENT = {
    "desc_first": '{"desc": ..., "bbox_2d"|"poly": [<|coord_N|>, ...]}',
    "geometry_first": '{"bbox_2d"|"poly": [<|coord_N|>, ...], "desc": ...}',
}
_ORDER = {"sorted": "top to bottom, then left to right", "random": "in any order"}


def compact_prompt(ordering: str, field_order: str) -> PromptPair:
    """System: one line naming the JSON shape, the element form and the order; user: the request."""
    check_ordering(ordering)
    check_field_order(field_order)
    system = f'Reply {{"objects": [...]}}; element {_ELEMENT[field_order]}; objects {_ORDER[ordering]}.'
    return PromptPair(system=system, user="Detect all objects in the image.")
