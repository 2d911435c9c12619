"""Benchmark: pixel values of one image, `PatchEncoder` against the HF image processor it reproduces.

Every Stage-1 sample and every vision-pretraining image goes through this step. Per image size
(`--sizes`, default 256 — the demo's — and 640), `--images` random RGB images are encoded by:

* `patch_encoder` — :class:`coordexp.train.encode.pixels.PatchEncoder` (uint8 patches first, then
  a per-channel lookup table calibrated on the processor itself);
* `image_processor` (baseline) — ``processor.image_processor(images=[image], return_tensors="pt")``.

Both sides run on the same images in alternating chunks on one thread, so load that comes and goes
slows both alike; ``time_ratio`` = patch_encoder CPU time / baseline CPU time, and ``identical``
says whether every output tensor was equal. Target: ≤ 0.5 and identical at the demo's 256² (larger
images spend relatively more time in the table lookup). Prints one JSON object.

    python bench/pixel_values.py [--images 200] [--sizes 256 640]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

TARGET_TIME_RATIO = 0.5
TARGET_SIZE = 256  # the demo's images
CHUNK = 20


def _cpu_seconds(fn, images) -> tuple[float, list]:
    start = time.process_time()
    outs = [fn(image) for image in images]
    return time.process_time() - start, outs


def run(n_images: int, size: int) -> dict[str, object]:
    import torch
    from PIL import Image

    from coordexp.train.encode.pixels import PatchEncoder
    from coordexp.train.models import build_tiny_tokenizer
    from coordexp.train.models.processor import build_processor

    torch.set_num_threads(1)
    processor = build_processor(build_tiny_tokenizer(), min_pixels=32 * 32, max_pixels=size * size)
    encoder = PatchEncoder(processor)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n_images)]

    def ours(image):
        return encoder([image])

    def baseline(image):
        return processor.image_processor(images=[image], return_tensors="pt")

    ours(images[0]), baseline(images[0])  # warm-up
    totals = {"patch_encoder": 0.0, "image_processor": 0.0}
    identical = True
    for start in range(0, n_images, CHUNK):
        chunk = images[start : start + CHUNK]
        t_ours, a = _cpu_seconds(ours, chunk)
        t_base, b = _cpu_seconds(baseline, chunk)
        totals["patch_encoder"] += t_ours
        totals["image_processor"] += t_base
        identical &= all(
            torch.equal(x["pixel_values"], y["pixel_values"])
            and torch.equal(x["image_grid_thw"], y["image_grid_thw"])
            for x, y in zip(a, b, strict=True)
        )
    ratio = totals["patch_encoder"] / totals["image_processor"]
    return {
        "image_size": size,
        "images": n_images,
        "ms_per_image": {k: round(v / n_images * 1e3, 3) for k, v in totals.items()},
        "time_ratio": round(ratio, 3),
        "identical": identical,
        "meets_target": identical and ratio <= TARGET_TIME_RATIO if size == TARGET_SIZE else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 640])
    args = parser.parse_args()
    results = [run(args.images, size) for size in args.sizes]
    print(
        json.dumps(
            {
                "baseline": "image_processor",
                "target_time_ratio": TARGET_TIME_RATIO,
                "target_image_size": TARGET_SIZE,
                "results": results,
                "meets_target": all(r["meets_target"] for r in results if r["image_size"] == TARGET_SIZE),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
