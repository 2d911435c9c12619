"""Run every benchmark in this folder and print one JSON object keyed by benchmark name.

Each benchmark is a script that prints one JSON object comparing against a named baseline in the
same run (ratios, not wall-clock asserts). `make bench` runs this file; `--only NAME` picks some.
Exit status: 0 when every benchmark ran (targets missed are reported in the JSON, not as
failures), 1 when a benchmark crashed or printed no JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = (
    "parse_scaling", "rollout_match", "rollout_prep", "pipeline_overhead", "stage1_step", "pixel_values",
)


def run_one(name: str) -> dict[str, object]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(HERE / f"{name}.py")], capture_output=True, text=True)
    elapsed = round(time.perf_counter() - start, 1)
    lines = [line for line in proc.stdout.splitlines() if line.strip().startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": f"exit {proc.returncode}", "stderr_tail": proc.stderr[-2000:], "wall_s": elapsed}
    try:
        result = json.loads("\n".join(proc.stdout[proc.stdout.index("{") :].splitlines()))
    except json.JSONDecodeError:
        result = json.loads(lines[-1])
    result["wall_s"] = elapsed
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=BENCHMARKS, help="run only these (repeatable)")
    args = parser.parse_args()
    results = {}
    for name in args.only or BENCHMARKS:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results[name] = run_one(name)
    print(json.dumps(results, indent=2, sort_keys=True))
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
