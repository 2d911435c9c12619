"""Image references of JSONL records: path resolution and decoded size (spec 01 §1.1).

A reference is a relative path, resolved against the JSONL's directory, and may not escape that
directory (checked on the normalized path, so a symlinked image folder inside it is fine). The size
comes from the image header via PIL (no pixel decoding), read once per unchanged file and process.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from stat import S_ISREG

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


#: (width, height) of every image header read in this process, by path, with the file's
#: (st_mtime_ns, st_size, st_ino) when read: a file not changed since is not opened again. A run
#: loads its train file several times (the demo: probe, vision pretraining, Stage-1), and opening
#: 12,000 headers with PIL takes ~3.5 s where a stat of each takes ~0.05 s.
_HEADER_SIZES: dict[Path, tuple[tuple[int, int, int], tuple[int, int]]] = {}


class ImageSizeReader:
    """Reads (width, height) from image headers; a file unchanged since any earlier read in this
    process (same modification time, size and inode) is not opened again."""

    def size(self, path: Path, ref: str) -> tuple[int, int]:
        """The decoded (width, height) of the image at `path`; `ref` is used in messages.

        Raises DataContractError with rule `image_path` (missing file) or `image_decode`.
        """
        try:
            stat = path.stat()
        except FileNotFoundError:
            stat = None
        except OSError as exc:  # e.g. a name longer than the file system allows
            raise DataContractError(
                "image_path", f"image {ref!r} cannot be looked up: {exc.strerror}", field="images[0]"
            ) from exc
        if stat is None or not S_ISREG(stat.st_mode):
            raise DataContractError(
                "image_path", f"image {ref!r} not found (looked for {path})", field="images[0]"
            )
        signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        cached = _HEADER_SIZES.get(path)
        if cached is not None and cached[0] == signature:
            return cached[1]
        try:
            with Image.open(path) as image:
                size = (int(image.width), int(image.height))
        except Exception as exc:  # PIL signals corrupt input through many exception types
            raise DataContractError(
                "image_decode",
                f"image {ref!r} ({path}) cannot be decoded: {type(exc).__name__}: {exc}",
                field="images[0]",
            ) from exc
        _HEADER_SIZES[path] = (signature, size)
        return size
