"""A synthetic, learnable detection data set in the contract format (spec 01 §1.1).

Each image is a grey, softly textured background with up to `max_objects` high-contrast shapes:
squares and circles (exported as `bbox_2d`) and triangles (`poly`, or their box in `bbox_only`
mode for `stage2_two_channel`), in four colours, so descs are "<colour> <shape>" from a closed set
of 12 classes. Object sides are a `size_range` fraction of the image's shorter side (default
15–45 %); an object is placed only where at most
`max_covered` of its box and of every earlier box overlaps another box, so every object stays
visible. Some images are empty. Image sizes are multiples of 32 so the Qwen3-VL processor
(patch 16 × merge 2) never resizes them.

Determinism: every image draws from its own PCG64 stream seeded by
`sha256(f"synth:{seed}:{split}:{index}")[:8]`, so the same seed gives byte-identical files and
image i of a split does not depend on the split's length.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import attrs
import numpy as np
from PIL import Image, ImageDraw

from coordexp.core.coordjson.serialize import CoordObject
from coordexp.core.errors import ConfigError
from coordexp.train.data.convert import bin_pixel_geometry, check_coord_form, contract_line, poly_bbox
from coordexp.train.data.ordering import sort_objects

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (30, 180, 55),
    "blue": (35, 75, 235),
    "yellow": (245, 215, 30),
}
SHAPES: tuple[str, ...] = ("square", "circle", "triangle")
DEFAULT_IMAGE_SIZES: tuple[tuple[int, int], ...] = ((128, 128), (160, 128), (128, 160), (192, 192))
SIZE_RANGE = (0.15, 0.45)  # default object side as a fraction of the image's shorter side
PLACEMENT_TRIES = 30
#: File formats `synthesize` writes, with PIL's save arguments. PNG is the default. BMP stores the
#: pixels raw: the noisy images barely compress anyway (a file ~1.6x the PNG), and decoding one
#: takes ~0.2 ms instead of ~1.1 ms, writing it 0.3 ms instead of 4.5 ms (a 2-core EPYC, 128-192
#: px sides), which matters where training decodes tens of thousands of them (the demo).
IMAGE_FORMATS: dict[str, dict[str, object]] = {
    # Noisy pixels barely compress: level 1 writes about as small a file, much faster.
    "png": {"format": "PNG", "optimize": False, "compress_level": 1},
    "bmp": {"format": "BMP"},
}


@attrs.frozen
class SynthResult:
    """Paths written and counts (`train_records`, `val_records`, `objects`, `empty_images`, per-desc)."""

    out_dir: Path
    train_jsonl: Path
    val_jsonl: Path
    counts: dict[str, int]

    def summary_lines(self) -> list[str]:
        return [f"wrote {self.train_jsonl} and {self.val_jsonl}"] + [
            f"{key}: {value}" for key, value in sorted(self.counts.items())
        ]


def _stream(seed: int, split: str, index: int) -> np.random.Generator:
    digest = hashlib.sha256(f"synth:{seed}:{split}:{index}".encode()).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest[:8], "big")))


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Mid-grey with a smooth low-frequency texture and faint per-pixel noise (uint8 RGB)."""
    base = rng.uniform(105.0, 150.0)
    coarse = rng.uniform(-18.0, 18.0, size=(height // 16 + 2, width // 16 + 2)).astype(np.float32)
    texture = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR))
    noise = rng.normal(0.0, 5.0, size=(height, width, 3))
    pixels = np.clip(base + texture[..., None] + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def _covered_too_much(box: Sequence[int], placed: Sequence[Sequence[int]], max_covered: float) -> bool:
    def area(b: Sequence[int]) -> int:  # inclusive pixel boxes
        return (b[2] - b[0] + 1) * (b[3] - b[1] + 1)

    for other in placed:
        iw = min(box[2], other[2]) - max(box[0], other[0]) + 1
        ih = min(box[3], other[3]) - max(box[1], other[1]) + 1
        if iw > 0 and ih > 0 and iw * ih > max_covered * min(area(box), area(other)):
            return True
    return False


def _triangle(rng: np.random.Generator, box: Sequence[int]) -> list[int]:
    """An isosceles triangle filling `box`, pointing up, down, left or right (pixel vertices)."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    direction = int(rng.integers(4))
    if direction == 0:
        return [cx, y0, x1, y1, x0, y1]
    if direction == 1:
        return [x0, y0, x1, y0, cx, y1]
    if direction == 2:
        return [x0, cy, x1, y0, x1, y1]
    return [x0, y0, x1, cy, x0, y1]


def _draw_scene(
    rng: np.random.Generator,
    width: int,
    height: int,
    n_objects: int,
    max_covered: float,
    size_range: tuple[float, float],
) -> tuple[Image.Image, list[tuple[str, str, list[int]]]]:
    """Render one image; return it and its objects as (desc, geom_key, pixel values)."""
    image = _background(rng, width, height)
    draw = ImageDraw.Draw(image)
    short = min(width, height)
    lo, hi = max(2, round(size_range[0] * short)), round(size_range[1] * short)
    placed: list[list[int]] = []
    objects: list[tuple[str, str, list[int]]] = []
    colour_names = tuple(COLOURS)
    for _ in range(n_objects):
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        colour = colour_names[int(rng.integers(len(colour_names)))]
        for _ in range(PLACEMENT_TRIES):
            side = int(rng.integers(lo, hi + 1))
            x0 = int(rng.integers(0, width - side + 1))
            y0 = int(rng.integers(0, height - side + 1))
            box = [x0, y0, x0 + side - 1, y0 + side - 1]
            if not _covered_too_much(box, placed, max_covered):
                break
        else:
            continue  # no room left for another visible object
        placed.append(box)
        fill = COLOURS[colour]
        if shape == "square":
            draw.rectangle(box, fill=fill)
            objects.append((f"{colour} square", "bbox_2d", box))
        elif shape == "circle":
            draw.ellipse(box, fill=fill)
            objects.append((f"{colour} circle", "bbox_2d", box))
        else:
            vertices = _triangle(rng, box)
            draw.polygon(vertices, fill=fill)
            objects.append((f"{colour} triangle", "poly", vertices))
    return image, objects


def _check_args(
    n_train: int,
    n_val: int,
    image_sizes: Sequence[tuple[int, int]],
    max_objects: int,
    empty_fraction: float,
    max_covered: float,
    size_range: tuple[float, float],
) -> None:
    for key, value in (("n_train", n_train), ("n_val", n_val)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(key, f"got {value!r}; expected an int >= 0")
    if not image_sizes:
        raise ConfigError("image_sizes", "expected at least one (width, height)")
    for size in image_sizes:
        if len(size) != 2 or any(not isinstance(v, int) or v < 32 or v % 32 for v in size):
            raise ConfigError(
                "image_sizes",
                f"got {size!r}; each side must be a multiple of 32 and >= 32 "
                "(the processor would otherwise resize)",
            )
    if isinstance(max_objects, bool) or not isinstance(max_objects, int) or max_objects < 1:
        raise ConfigError("max_objects", f"got {max_objects!r}; expected an int >= 1")
    if not 0.0 <= empty_fraction <= 1.0:
        raise ConfigError("empty_fraction", f"got {empty_fraction!r}; expected a value in [0, 1]")
    if not 0.0 <= max_covered < 1.0:
        raise ConfigError("max_covered", f"got {max_covered!r}; expected a value in [0, 1)")
    if (
        len(size_range) != 2
        or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in size_range)
        or not 0.0 < size_range[0] <= size_range[1] <= 1.0
    ):
        raise ConfigError(
            "size_range",
            f"got {size_range!r}; expected (lo, hi) fractions of the shorter image side with 0 < lo <= hi <= 1",
        )



@attrs.frozen
class _Scene:
    """What every image of a `synthesize` call shares (picklable, for worker processes)."""

    seed: int
    image_sizes: tuple[tuple[int, int], ...]
    max_objects: int
    empty_fraction: float
    max_covered: float
    size_range: tuple[float, float]
    bbox_only: bool
    coord_form: str
    image_format: str


def _write_image(job: tuple[_Scene, Path, str, int]) -> tuple[str, list[str]]:
    """Draw image `index` of `split`, write its file; returns its JSONL line and its objects' descs."""
    scene, image_dir, split, index = job
    rng = _stream(scene.seed, split, index)
    width, height = scene.image_sizes[int(rng.integers(len(scene.image_sizes)))]
    n_objects = 0 if rng.random() < scene.empty_fraction else int(rng.integers(1, scene.max_objects + 1))
    image, drawn = _draw_scene(rng, width, height, n_objects, scene.max_covered, scene.size_range)
    name = f"{index:05d}.{scene.image_format}"
    image.save(image_dir / name, **IMAGE_FORMATS[scene.image_format])
    objects: list[CoordObject] = []
    for desc, geom_key, values in drawn:
        if geom_key == "poly" and scene.bbox_only:
            geom_key, values = "bbox_2d", poly_bbox(values)
        obj, _ = bin_pixel_geometry(desc, geom_key, values, width, height, field=geom_key)
        objects.append(obj)
    ordered, _ = sort_objects(objects)
    line = contract_line(
        image_ref=f"images/{split}/{name}",
        width=width,
        height=height,
        objects=ordered,
        coord_form=scene.coord_form,
        record_id=f"{split}-{index:05d}",
        metadata={"split": split, "index": index},
        has_metadata=True,
    )
    return line, [obj.desc for obj in ordered]


def synthesize(
    out_dir: str | Path,
    *,
    n_train: int,
    n_val: int,
    seed: int,
    image_sizes: Sequence[tuple[int, int]] = DEFAULT_IMAGE_SIZES,
    max_objects: int = 5,
    empty_fraction: float = 0.08,
    max_covered: float = 0.3,
    size_range: tuple[float, float] = SIZE_RANGE,
    bbox_only: bool = False,
    coord_form: str = "int",
    workers: int = 1,
    image_format: str = "png",
) -> SynthResult:
    """Write `out_dir/images/{train,val}/NNNNN.<image_format>` and `out_dir/{train,val}.jsonl`.

    Coordinates are norm1000 bins (ints or `<|coord_k|>` strings per `coord_form`), polygons
    canonical, objects sorted; the files pass `validate_jsonl`. Record ids are "train-00000" etc.
    `workers` > 1 draws and writes the images in that many processes: the same bytes as 1.
    """
    _check_args(n_train, n_val, image_sizes, max_objects, empty_fraction, max_covered, size_range)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError("synth.workers", f"got {workers!r}; expected an int >= 1")
    if image_format not in IMAGE_FORMATS:
        raise ConfigError(
            "synth.image_format", f"got {image_format!r}; expected one of {sorted(IMAGE_FORMATS)}"
        )
    check_coord_form(coord_form)
    root = Path(out_dir).absolute()
    counts: dict[str, int] = {"objects": 0, "empty_images": 0}
    paths = {}
    scene = _Scene(
        seed=seed,
        image_sizes=tuple(tuple(size) for size in image_sizes),
        max_objects=max_objects,
        empty_fraction=empty_fraction,
        max_covered=max_covered,
        size_range=tuple(size_range),
        bbox_only=bbox_only,
        coord_form=coord_form,
        image_format=image_format,
    )
    for split, n in (("train", n_train), ("val", n_val)):
        image_dir = root / "images" / split
        image_dir.mkdir(parents=True, exist_ok=True)
        jobs = [(scene, image_dir, split, index) for index in range(n)]
        if workers > 1 and n > 1:
            # Every image draws from its own stream (seed, split, index), so the files and lines
            # do not depend on which process writes them; `map` keeps index order.
            with ProcessPoolExecutor(max_workers=workers) as pool:
                written = list(pool.map(_write_image, jobs, chunksize=max(1, min(256, n // (4 * workers)))))
        else:
            written = [_write_image(job) for job in jobs]
        for _line, descs in written:
            for desc in descs:
                counts[desc] = counts.get(desc, 0) + 1
            counts["objects"] += len(descs)
            counts["empty_images"] += int(not descs)
        path = root / f"{split}.jsonl"
        path.write_text("".join(line for line, _ in written), encoding="utf-8", newline="\n")
        paths[split] = path
        counts[f"{split}_records"] = n
    return SynthResult(root, paths["train"], paths["val"], counts)
