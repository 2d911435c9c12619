"""Detection categories from descriptions (spec 06 §6.4, D30).

A desc is normalized by NFKC, lowercasing, stripping and collapsing every run of whitespace to
one space. The categories of an evaluation are the sorted set of normalized GT descs with ids
1..C; a prediction belongs to the category whose name equals its normalized desc exactly and is
unmapped (dropped from COCO, counted) otherwise.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping

import attrs


def normalize_desc(desc: str) -> str:
    """NFKC → lowercase → strip → whitespace runs collapsed to one space."""
    return " ".join(unicodedata.normalize("NFKC", desc).lower().split())


def _ids(names: tuple[str, ...]) -> dict[str, int]:
    return {name: index for index, name in enumerate(names, start=1)}


@attrs.frozen
class CategoryMap:
    """Category names (sorted, normalized, unique) and their ids ``1..len(names)``."""

    names: tuple[str, ...] = attrs.field(converter=tuple)
    _id_of: Mapping[str, int] = attrs.field(init=False, repr=False, eq=False)

    @names.validator
    def _check_names(self, _attribute: attrs.Attribute, names: tuple[str, ...]) -> None:
        if list(names) != sorted(set(names)):
            raise ValueError("category names must be sorted and unique")
        bad = [n for n in names if n != normalize_desc(n) or not n]
        if bad:
            raise ValueError(f"category names must be normalized non-empty descs, got {bad[:4]}")

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_id_of", _ids(self.names))

    def id_of(self, desc: str) -> int | None:
        """The category id of ``desc`` (normalized first), or None when it is unmapped."""
        return self._id_of.get(normalize_desc(desc))

    def as_coco(self) -> list[dict[str, object]]:
        """COCO ``categories`` entries ``[{id, name}]`` in id order."""
        return [{"id": index, "name": name} for index, name in enumerate(self.names, start=1)]


def build_categories(gt_descs: Iterable[str]) -> CategoryMap:
    """The category map of a set of GT descs (raw; normalized here)."""
    return CategoryMap(sorted({normalize_desc(d) for d in gt_descs}))
