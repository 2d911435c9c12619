"""Metrics with declared reductions and the once-per-step packed reducer (spec 02 §2.10, D20).

A :class:`Metric` is either a ratio (``reduction="mean"``: ``num``/``den``, reduced as
``Σnum / Σden`` over micro-batches and ranks) or a single value reduced by ``"sum"`` or ``"max"``.
Values may be Python numbers or 0-dim tensors; tensors are detached and stay on their device until
the step's reduction, so emitting a metric never forces a device sync.

:class:`StepAggregator` is built once per optimizer step from the statically declared key list
(identical on every rank), accumulates every micro-batch, and reduces with exactly two collectives
— one SUM and one MAX all-reduce over fixed-size float64 tensors — in the same order on every rank.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Union

import attrs
import torch

from coordexp.core.errors import PipelineError

MEAN = "mean"
SUM = "sum"
MAX = "max"
REDUCTIONS: tuple[str, ...] = (MEAN, SUM, MAX)

SUM_SUFFIXES: tuple[str, ...] = ("_total", "_count", "_sum", "_num", "_den")
MAX_SUFFIXES: tuple[str, ...] = ("_max", "_p90")
MEAN_ONLY_SUFFIXES: tuple[str, ...] = ("_mean", "_rate", "_frac")
LOSS_PREFIX = "loss/"
LOSS_TOTAL_KEY = "loss/total"

Number = Union[float, int, torch.Tensor]
AllReduce = Callable[[torch.Tensor, str], Union[torch.Tensor, None]]


def is_internal(key: str) -> bool:
    """True for keys that are reduced but never logged: ``_*`` or containing ``/_``."""
    return key.startswith("_") or "/_" in key


def allowed_reductions(key: str) -> frozenset[str]:
    """Reductions the 02 §2.10 naming table allows for ``key`` (first matching row wins).

    ``loss/*`` → mean; ``*_total|_count|_sum|_num|_den`` → sum; ``*_max|_p90`` → max;
    ``*_mean|_rate|_frac`` → mean; any other key → mean, or max where the producer documents it.
    """
    if key.startswith(LOSS_PREFIX):
        return frozenset({MEAN})
    if key.endswith(SUM_SUFFIXES):
        return frozenset({SUM})
    if key.endswith(MAX_SUFFIXES):
        return frozenset({MAX})
    if key.endswith(MEAN_ONLY_SUFFIXES):
        return frozenset({MEAN})
    return frozenset({MEAN, MAX})


def reduction_for_key(key: str) -> str:
    """The default reduction the naming table prescribes for ``key`` (``mean`` for unsuffixed keys)."""
    allowed = allowed_reductions(key)
    return next(iter(allowed)) if len(allowed) == 1 else MEAN


def check_key_reduction(key: str, reduction: str) -> None:
    """Raise :class:`PipelineError` when ``reduction`` conflicts with the naming table for ``key``."""
    if not isinstance(key, str) or not key:
        raise PipelineError(f"metric key must be a non-empty string, got {key!r}")
    if reduction not in REDUCTIONS:
        raise PipelineError(f"metric {key!r}: unknown reduction {reduction!r}; expected one of {REDUCTIONS}")
    allowed = allowed_reductions(key)
    if reduction not in allowed:
        raise PipelineError(
            f"metric {key!r} is declared with reduction {reduction!r}, but its name requires "
            f"{' or '.join(sorted(allowed))} (spec 02 §2.10); rename the key or change the reduction"
        )


def _check_number(name: str, value: object) -> Number:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number or a 0-dim tensor, got bool {value!r}")
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar tensor, got shape {tuple(value.shape)}")
        return value.detach().reshape(())
    if isinstance(value, (int, float)):
        return float(value)
    raise TypeError(f"{name} must be a number or a 0-dim tensor, got {type(value).__name__} {value!r}")


def _optional_number(name: str) -> Callable[[object], Number | None]:
    def convert(value: object) -> Number | None:
        return None if value is None else _check_number(name, value)

    return convert


@attrs.frozen
class Metric:
    """One metric observation of one micro-batch.

    ``reduction="mean"`` needs ``num`` and ``den`` (the step value is ``Σnum/Σden``); ``"sum"`` and
    ``"max"`` need ``value``. Numbers are stored as ``float``; tensors as detached 0-dim tensors.
    Whether the key's name agrees with its reduction is checked by :func:`check_metric`, not here,
    so the caller decides what a violation means (objective: fatal; diagnostic: disabled).
    """

    key: str = attrs.field(validator=attrs.validators.instance_of(str))
    reduction: str = attrs.field(validator=attrs.validators.in_(REDUCTIONS))
    value: Number | None = attrs.field(default=None, converter=_optional_number("value"))
    num: Number | None = attrs.field(default=None, converter=_optional_number("num"))
    den: Number | None = attrs.field(default=None, converter=_optional_number("den"))

    def __attrs_post_init__(self) -> None:
        if not self.key:
            raise ValueError("metric key must be non-empty")
        if self.reduction == MEAN:
            if self.num is None or self.den is None or self.value is not None:
                raise ValueError(f"mean metric {self.key!r} needs num and den and no value")
        elif self.value is None or self.num is not None or self.den is not None:
            raise ValueError(f"{self.reduction} metric {self.key!r} needs value and no num/den")

    @classmethod
    def mean(cls, key: str, num: Number, den: Number) -> Metric:
        return cls(key, MEAN, num=num, den=den)

    @classmethod
    def sum(cls, key: str, value: Number) -> Metric:
        return cls(key, SUM, value=value)

    @classmethod
    def max(cls, key: str, value: Number) -> Metric:
        return cls(key, MAX, value=value)


def check_metric(metric: Metric) -> None:
    """Raise :class:`PipelineError` when the metric's reduction conflicts with its key's pattern."""
    check_key_reduction(metric.key, metric.reduction)


@attrs.frozen
class DerivedMetric:
    """A key computed after reduction from reduced values (internal keys included).

    ``compute`` returns ``None`` when its inputs are absent; the key is then not logged.
    """

    key: str
    compute: Callable[[Mapping[str, float]], float | None]


def _is_loss_atom_key(key: str) -> bool:
    parts = key.split("/")
    return len(parts) == 3 and parts[0] == "loss" and all(parts)


def _loss_total(reduced: Mapping[str, float]) -> float | None:
    atoms = [v for k, v in reduced.items() if _is_loss_atom_key(k)]
    return math.fsum(atoms) if atoms else None


LOSS_TOTAL = DerivedMetric(LOSS_TOTAL_KEY, _loss_total)
"""``loss/total`` = Σ of the reduced ``loss/<ctx>/<atom>`` keys (02 §2.10; invariant L8 by construction)."""


def f1_metric(key: str, precision_key: str, recall_key: str) -> DerivedMetric:
    """``2PR/(P+R)`` from two reduced keys; 0.0 when both are 0; absent when either is absent."""

    def compute(reduced: Mapping[str, float]) -> float | None:
        if precision_key not in reduced or recall_key not in reduced:
            return None
        p, r = reduced[precision_key], reduced[recall_key]
        return 0.0 if p + r == 0.0 else 2.0 * p * r / (p + r)

    return DerivedMetric(key, compute)


@attrs.frozen
class _Slot:
    reduction: str
    value: int  # mean: num index; sum/max: value index
    den: int  # mean only, else -1
    observed: int  # index of the observed flag (in the sum buffer for mean/sum, max buffer for max)


class StepAggregator:
    """Accumulates one optimizer step's metrics and reduces them rank-symmetrically.

    Layout (float64, fixed by the declared list, identical on every rank):

    * SUM buffer: ``[micro_batches, (num, den, observed) per mean key, (value, observed) per sum key]``
    * MAX buffer: ``[micro_batches, value per max key, observed per max key]`` (values start at -inf)

    Both buffers are always all-reduced, SUM first, even when a part is empty. ``reduce`` drops keys
    no rank observed, mean keys with ``Σden == 0``, then adds ``derived`` keys and finally removes
    internal keys (:func:`is_internal`). Use one aggregator per step.
    """

    def __init__(
        self,
        declared: Iterable[tuple[str, str]],
        *,
        derived: Sequence[DerivedMetric] = (LOSS_TOTAL,),
        device: torch.device | str = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.derived = tuple(derived)
        keys: dict[str, str] = {}
        for key, reduction in declared:
            check_key_reduction(key, reduction)
            previous = keys.setdefault(key, reduction)
            if previous != reduction:
                raise PipelineError(
                    f"metric {key!r} is declared with two reductions ({previous!r} and {reduction!r})"
                )
        for derived_metric in self.derived:
            if derived_metric.key in keys:
                raise PipelineError(
                    f"metric {derived_metric.key!r} is derived after reduction; do not declare or emit it"
                )
        self.keys: tuple[tuple[str, str], ...] = tuple(keys.items())
        self._slots: dict[str, _Slot] = {}
        n_sum, n_max = 1, 1
        for key, reduction in self.keys:
            if reduction == MEAN:
                self._slots[key] = _Slot(MEAN, n_sum, n_sum + 1, n_sum + 2)
                n_sum += 3
            elif reduction == SUM:
                self._slots[key] = _Slot(SUM, n_sum, -1, n_sum + 1)
                n_sum += 2
        max_keys = [k for k, r in self.keys if r == MAX]
        for i, key in enumerate(max_keys):
            self._slots[key] = _Slot(MAX, 1 + i, -1, 1 + len(max_keys) + i)
        n_max += 2 * len(max_keys)
        self._sum = torch.zeros(n_sum, dtype=torch.float64, device=self.device)
        self._max = torch.zeros(n_max, dtype=torch.float64, device=self.device)
        self._max[1 : 1 + len(max_keys)] = -math.inf

    def _slot(self, metric: Metric) -> _Slot:
        slot = self._slots.get(metric.key)
        if slot is None:
            raise PipelineError(
                f"metric {metric.key!r} was not declared for this step; every key must come from the "
                f"static per-(channel, context) declaration so all ranks reduce one key list"
            )
        if slot.reduction != metric.reduction:
            raise PipelineError(
                f"metric {metric.key!r} emitted with reduction {metric.reduction!r} but declared "
                f"{slot.reduction!r}"
            )
        return slot

    def _scatter(self, buffer: torch.Tensor, index: list[int], values: list[Number], reduce: str) -> None:
        """Apply ``values`` at ``index`` into ``buffer`` (``"sum"`` or ``"amax"``): Python numbers in
        one host→device copy, tensors stacked on the device, so no device value is read back."""
        for is_tensor in (False, True):
            picked = [
                (i, v) for i, v in zip(index, values, strict=True) if isinstance(v, torch.Tensor) is is_tensor
            ]
            if not picked:
                continue
            where = torch.tensor([i for i, _ in picked], dtype=torch.long, device=self.device)
            if is_tensor:
                data = torch.stack([v.to(device=self.device, dtype=torch.float64) for _, v in picked])
            else:
                data = torch.tensor([v for _, v in picked], dtype=torch.float64, device=self.device)
            if reduce == "sum":
                buffer.index_add_(0, where, data)
            else:
                buffer.scatter_reduce_(0, where, data, reduce="amax")

    def add(self, metrics: Iterable[Metric]) -> None:
        """Accumulate one micro-batch's metrics (a key not declared, or a wrong reduction, raises)."""
        sum_idx: list[int] = [0]
        sum_val: list[Number] = [1.0]
        max_idx: list[int] = []
        max_val: list[Number] = []
        for metric in metrics:
            slot = self._slot(metric)
            if slot.reduction == MEAN:
                sum_idx += [slot.value, slot.den, slot.observed]
                sum_val += [metric.num, metric.den, 1.0]
            elif slot.reduction == SUM:
                sum_idx += [slot.value, slot.observed]
                sum_val += [metric.value, 1.0]
            else:
                max_idx += [slot.value, slot.observed]
                max_val += [metric.value, 1.0]
        self._scatter(self._sum, sum_idx, sum_val, "sum")
        self._scatter(self._max, max_idx, max_val, "amax")
        self._max[0] = self._sum[0]

    def packed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Copies of this rank's (SUM, MAX) buffers, as handed to the two all-reduces."""
        return self._sum.clone(), self._max.clone()

    @staticmethod
    def _collective(all_reduce: AllReduce, tensor: torch.Tensor, op: str) -> torch.Tensor:
        out = all_reduce(tensor, op)
        out = tensor if out is None else out
        if out.shape != tensor.shape:
            raise PipelineError(
                f"{op} all-reduce returned shape {tuple(out.shape)} for a buffer of shape "
                f"{tuple(tensor.shape)}; ranks declared different metric key lists"
            )
        return out

    def reduce(self, all_reduce: AllReduce | None = None) -> dict[str, float]:
        """Reduce across ranks (``all_reduce(tensor, "sum"|"max")``; ``None`` = single process).

        ``all_reduce`` may reduce in place and return ``None``, or return the reduced tensor.
        Returns the logged keys in declared order, then the derived keys.
        """
        sums, maxes = self.packed()
        if all_reduce is not None:
            sums = self._collective(all_reduce, sums, SUM)
            maxes = self._collective(all_reduce, maxes, MAX)
        sum_list = sums.detach().cpu().tolist()
        max_list = maxes.detach().cpu().tolist()
        reduced: dict[str, float] = {}
        for key, _ in self.keys:
            slot = self._slots[key]
            if slot.reduction == MAX:
                if max_list[slot.observed] > 0.0:
                    reduced[key] = max_list[slot.value]
                continue
            if sum_list[slot.observed] <= 0.0:
                continue
            if slot.reduction == SUM:
                reduced[key] = sum_list[slot.value]
            elif sum_list[slot.den] != 0.0:
                reduced[key] = sum_list[slot.value] / sum_list[slot.den]
        for derived in self.derived:
            value = derived.compute(reduced)
            if value is not None:
                reduced[derived.key] = float(value)
        return {k: v for k, v in reduced.items() if not is_internal(k)}
