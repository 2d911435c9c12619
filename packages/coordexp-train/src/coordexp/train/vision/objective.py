"""The region head on merged vision tokens and its loss (used only while pretraining the tower).

The head is a linear map from the tower's merged-token features (the text hidden size, what the
language model receives) to :attr:`RegionVocab.n_classes` logits per sub-cell. It is thrown away
afterwards: a Qwen3-VL checkpoint has no place for it, and Stage-1 reads the features, not the head.
"""

from __future__ import annotations

import attrs
import torch


class RegionHead(torch.nn.Module):
    """Linear ``hidden → subcells² · n_classes``; :meth:`forward` maps ``(tokens, hidden)`` features
    to ``(tokens · subcells², n_classes)`` logits, in the order of :func:`regions.region_labels`."""

    def __init__(self, hidden: int, n_classes: int, subcells: int) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.linear = torch.nn.Linear(hidden, subcells * subcells * n_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features).reshape(-1, self.n_classes)


@attrs.frozen
class RegionStats:
    """Sums over the cells of one or more batches; they add up, and the ``mean_ce`` /
    ``*_accuracy`` properties divide once at the end (so a window's means weigh every cell alike).

    ``ce_sum``: summed cross-entropy (nats) over ``cells``; ``correct``: cells whose argmax is the
    label; ``object_correct`` / ``objects``: the same on object-centre cells only.
    """

    ce_sum: float
    cells: int
    correct: int
    object_correct: int
    objects: int

    def __add__(self, other: RegionStats) -> RegionStats:
        return RegionStats(*(a + b for a, b in zip(attrs.astuple(self), attrs.astuple(other), strict=True)))

    @property
    def mean_ce(self) -> float:
        return self.ce_sum / self.cells if self.cells else 0.0

    @property
    def cell_accuracy(self) -> float:
        return self.correct / self.cells if self.cells else 0.0

    @property
    def object_accuracy(self) -> float:
        """Accuracy on object-centre cells; 0.0 when there was no object."""
        return self.object_correct / self.objects if self.objects else 0.0


ZERO = RegionStats(0.0, 0, 0, 0, 0)


def region_loss(
    logits: torch.Tensor, classes: torch.Tensor, centres: torch.Tensor
) -> tuple[torch.Tensor, RegionStats]:
    """Mean cross-entropy over all cells, plus the batch's :class:`RegionStats`.

    ``logits``: ``(cells, n_classes)``; ``classes``: int64 ``(cells,)``; ``centres``: bool ``(cells,)``.
    Every cell weighs the same, background included (it is most cells: the head must also learn
    where objects are not).
    """
    ce_sum = torch.nn.functional.cross_entropy(logits, classes, reduction="sum")
    with torch.no_grad():
        hit = logits.argmax(-1) == classes
        stats = RegionStats(
            ce_sum=float(ce_sum),
            cells=int(classes.numel()),
            correct=int(hit.sum()),
            object_correct=int(hit[centres].sum()),
            objects=int(centres.sum()),
        )
    return ce_sum / max(1, classes.numel()), stats
