"""Shared fixtures of the training-executor tests (and, through tests/conftest.py, of the
repository-level DDP test).

* `stage1_assets` (session): a small synthetic data set (8 train / 3 val records, 64-96 px images,
  at most 3 objects) plus a random tiny Qwen3-VL on the bundled vocabulary. Built once per
  session into the session's base temp directory; a second registration of the fixture (the
  repository-level conftest) finds the finished build and reuses it.
* `train_stage1` (session): `train_stage1(out_dir, *overrides, force_resume=False,
  sgd_grads=None, decide_total=None) -> TrainResult`, the real recipe
  (`run_training(load_config(...))`) on `configs/demo/stage1.yaml` pointed at the assets, with small
  test settings in front of the caller's overrides. Passing a list as `sgd_grads` swaps AdamW for
  `RecordingSGD` over the same parameter groups, which appends every step's gradients to that
  list; `decide_total` is passed to `run_training`.
* `stage1_baseline` (session): one uninterrupted 4-step run with checkpoints at steps 2 and 4, an
  evaluation at step 4, and the `coordexp.train` log records of the run.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import attrs
import pytest
import torch

import coordexp.train.recipes.train as recipe
from coordexp.train.config import load_config
from coordexp.train.data.commands import cmd_synth
from coordexp.train.executor.optim import build_optimizer
from coordexp.train.models import create_model
from coordexp.train.recipes.train import TrainResult, run_training

REPO_ROOT = Path(__file__).resolve().parents[3]
DEMO_CONFIG = REPO_ROOT / "configs" / "demo" / "stage1.yaml"

N_TRAIN = 8
N_VAL = 3
SMALL_IMAGES = ((64, 64), (96, 64), (64, 96))

# In front of every run's overrides: short, quiet, fast; callers override any of them.
TEST_SETTINGS = (
    "training.max_steps=4",
    "training.warmup_steps=1",
    "training.logging_steps=1",
    "training.eval_strategy=no",
    "training.save_strategy=no",
    "template.max_length=1024",
    # The tests were sized for the default prompt's sample lengths and 2 packs per step (the
    # small session data set fills only a few packs).
    "custom.prompt_variant=default",
    "training.effective_batch_size=2",
)


@attrs.frozen
class Stage1Assets:
    """Paths of the session's data set and model. `train4_jsonl` holds the first 4 train records
    (same images), for tests that need every optimizer step to see the same sample set."""

    root: Path
    model_dir: Path
    train_jsonl: Path
    val_jsonl: Path
    train4_jsonl: Path

    def overrides(self, out_dir: Path, *extra: str) -> list[str]:
        """Overrides pointing the demo config at these assets and `out_dir`, then `extra`."""
        return [
            f"model.model={self.model_dir}",
            f"custom.train_jsonl={self.train_jsonl}",
            f"custom.val_jsonl={self.val_jsonl}",
            f"training.output_dir={out_dir}",
            f"training.logging_dir={out_dir / 'logs'}",
            *TEST_SETTINGS,
            *extra,
        ]


def build_stage1_assets(root: Path) -> Stage1Assets:
    """Create (or reuse, when `root/.done` exists) the synthetic data set and tiny model."""
    assets = Stage1Assets(
        root=root,
        model_dir=root / "model",
        train_jsonl=root / "data" / "train.jsonl",
        val_jsonl=root / "data" / "val.jsonl",
        train4_jsonl=root / "data" / "train4.jsonl",
    )
    done = root / ".done"
    if done.is_file():
        return assets
    status = cmd_synth(
        root / "data",
        n_train=N_TRAIN,
        n_val=N_VAL,
        seed=0,
        image_sizes=SMALL_IMAGES,
        max_objects=3,
        out=io.StringIO(),
    )
    assert status == 0, "the synthetic data set failed validation"
    lines = assets.train_jsonl.read_text(encoding="utf-8").splitlines(keepends=True)
    assets.train4_jsonl.write_text("".join(lines[:4]), encoding="utf-8")
    create_model("tiny", "bundled", 0, assets.model_dir, overwrite=True)
    done.write_text("ok\n")
    return assets


@pytest.fixture(scope="session")
def stage1_assets(tmp_path_factory: pytest.TempPathFactory) -> Stage1Assets:
    return build_stage1_assets(tmp_path_factory.getbasetemp() / "stage1-assets")


class RecordingSGD(torch.optim.SGD):
    """Plain SGD that keeps each step's gradients: `grads[step][param_name]` (CPU copies).

    With SGD parameters move by exactly `-lr·grad`, so equal gradients give equal parameters to
    float precision. AdamW's `g/sqrt(v)` turns rounding noise into full-size steps wherever a
    gradient component is ~0, which would hide gradient equality behind optimizer noise.
    """

    def __init__(self, model: torch.nn.Module, grads: list[dict[str, torch.Tensor]], **rates: float) -> None:
        groups = build_optimizer(model, **rates).param_groups  # the executor's groups and frozen parts
        super().__init__(
            [{"params": g["params"], "lr": g["lr"], "name": g["name"]} for g in groups],
            lr=rates["learning_rate"],
        )
        self._named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.grads = grads

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        self.grads.append(
            {n: p.grad.detach().to("cpu").clone() for n, p in self._named if p.grad is not None}
        )
        return super().step(closure)


@contextlib.contextmanager
def _recipe_optimizer(builder: Callable[..., torch.optim.Optimizer]) -> Iterator[None]:
    saved = recipe.build_optimizer
    recipe.build_optimizer = builder
    try:
        yield
    finally:
        recipe.build_optimizer = saved


TrainFn = Callable[..., TrainResult]


@pytest.fixture(scope="session")
def train_stage1(stage1_assets: Stage1Assets) -> TrainFn:
    def train(
        out_dir: Path,
        *overrides: str,
        force_resume: bool = False,
        sgd_grads: list | None = None,
        decide_total: Callable[[int, float], int] | None = None,
    ) -> TrainResult:
        resolved = load_config(str(DEMO_CONFIG), stage1_assets.overrides(out_dir, *overrides))
        run = dict(force_resume=force_resume, progress=False, decide_total=decide_total)
        if sgd_grads is None:
            return run_training(resolved, **run)
        with _recipe_optimizer(lambda model, **rates: RecordingSGD(model, sgd_grads, **rates)):
            return run_training(resolved, **run)

    return train


@attrs.frozen
class BaselineRun:
    out_dir: Path
    result: TrainResult
    log_records: tuple[logging.LogRecord, ...]
    overrides: tuple[str, ...]


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


BASELINE_OVERRIDES: Sequence[str] = (
    "training.max_steps=4",
    "training.save_strategy=steps",
    "training.save_steps=2",
    "training.eval_strategy=steps",
    "training.eval_steps=4",
)


@pytest.fixture(scope="session")
def stage1_baseline(tmp_path_factory: pytest.TempPathFactory, train_stage1: TrainFn) -> BaselineRun:
    out_dir = tmp_path_factory.mktemp("baseline")
    logger = logging.getLogger("coordexp.train")
    handler, level = _Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        result = train_stage1(out_dir, *BASELINE_OVERRIDES)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return BaselineRun(out_dir, result, tuple(handler.records), tuple(BASELINE_OVERRIDES))


@pytest.fixture
def coord_pick_calls(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """Records, per `ExpectedCoordProcessor` call, the coord ids it was built with (in bin order):
    empty unless expectation decoding reached `generate`."""
    from coordexp.rollout.coord_pick import ExpectedCoordProcessor

    calls: list[list[int]] = []
    original = ExpectedCoordProcessor.__call__

    def recorded(self: ExpectedCoordProcessor, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        calls.append(self.coord_ids.tolist())
        return original(self, input_ids, scores)

    monkeypatch.setattr(ExpectedCoordProcessor, "__call__", recorded)
    return calls
