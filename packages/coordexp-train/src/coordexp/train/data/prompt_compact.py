"""Short prompt variants for small models trained from scratch: `compact` and `minimal`.

Registered through the `coordexp.prompts` entry point (like any third-party variant), not as
built-ins, so the spec's built-in set stays `default` + `coco_80`. The default system text is ~260
of ~400 tokens of a synthetic sample, and every prompt token costs attention and packing room
without carrying information that a model which never read English can use: to such a model the
prompt is a constant prefix.

* `compact`: the default prompt's contract in one line, about a fifth of the tokens (46 tokens of
  system text with the bundled tokenizer).
* `minimal`: only names the format, the field order and the ordering (~19 text tokens in all), for runs
  where the prefix is pure cost (the demo: a third more samples fit a 1,024-token pack).

Both keep the output contract: CoordJSON, coordinate tokens, the configured field order and
object ordering; each (ordering, field order) pair gets its own text.
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


_FIELDS_SHORT = {"desc_first": "desc first", "geometry_first": "geometry first"}
_ORDER_SHORT = {"sorted": "sorted", "random": "any order"}


def minimal_prompt(ordering: str, field_order: str) -> PromptPair:
    """System: the format, field order and ordering in a few words; user: the request."""
    check_ordering(ordering)
    check_field_order(field_order)
    return PromptPair(
        system=f"CoordJSON, {_FIELDS_SHORT[field_order]}, {_ORDER_SHORT[ordering]}.", user="Detect all objects."
    )
