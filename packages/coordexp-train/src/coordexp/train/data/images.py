"""Image references of JSONL records: path resolution and decoded size (spec 01 §1.1).

A reference is a relative path, resolved against the JSONL's directory, and may not escape that
directory (checked on the normalized path, so a symlinked image folder inside it is fine). The size
comes from the image header via PIL (no pixel decoding).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from PIL import Image

from coordexp.core.errors import DataContractError


def resolve_image_ref(ref: str, base_dir: Path) -> Path:
    """Return `base_dir / ref` normalized, or raise DataContractError(rule="image_path").

    `base_dir` must be absolute. The reference must be a non-empty relative path without NUL
    characters whose normalized form stays inside `base_dir`. Existence is not checked here.
    """
    if not ref.strip():
        raise DataContractError(
            "image_path",
            "image path is empty; give a path relative to the JSONL's directory",
            field="images[0]",
        )
    if "\x00" in ref:
        raise DataContractError(
            "image_path", f"image path {ref!r} contains a NUL character", field="images[0]"
        )
    try:
        os.fsencode(ref)
    except UnicodeEncodeError as exc:
        raise DataContractError(
            "image_path",
            f"image path {ref!r} cannot be encoded as a file name: {exc.reason}",
            field="images[0]",
        ) from exc
    if os.path.isabs(ref) or PurePosixPath(ref).is_absolute():
        raise DataContractError(
            "image_path",
            f"image path {ref!r} is absolute; store it relative to the JSONL's directory ({base_dir})",
            field="images[0]",
        )
    normalized = os.path.normpath(ref)
    if normalized == os.pardir or normalized.startswith(os.pardir + os.sep):
        raise DataContractError(
            "image_path",
            f"image path {ref!r} escapes the JSONL's directory ({base_dir}); "
            "place the images in or below that directory",
            field="images[0]",
        )
    return base_dir / normalized


class ImageSizeReader:
    """Reads (width, height) from image headers, caching by path (records may share an image)."""

    def __init__(self) -> None:
        self._sizes: dict[Path, tuple[int, int]] = {}

    def size(self, path: Path, ref: str) -> tuple[int, int]:
        """The decoded (width, height) of the image at `path`; `ref` is used in messages.

        Raises DataContractError with rule `image_path` (missing file) or `image_decode`.
        """
        cached = self._sizes.get(path)
        if cached is not None:
            return cached
        try:
            found = path.is_file()
        except OSError as exc:  # e.g. a name longer than the file system allows
            raise DataContractError(
                "image_path", f"image {ref!r} cannot be looked up: {exc.strerror}", field="images[0]"
            ) from exc
        if not found:
            raise DataContractError(
                "image_path", f"image {ref!r} not found (looked for {path})", field="images[0]"
            )
        try:
            with Image.open(path) as image:
                size = (int(image.width), int(image.height))
        except Exception as exc:  # PIL signals corrupt input through many exception types
            raise DataContractError(
                "image_decode",
                f"image {ref!r} ({path}) cannot be decoded: {type(exc).__name__}: {exc}",
                field="images[0]",
            ) from exc
        self._sizes[path] = size
        return size
