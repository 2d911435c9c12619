"""The row-weight table of spec 02 §2.4 for token_ce, and the text-gate row set derived from it.

A row's token_ce weight is a function of (context, span kind, token type) and the resolved weights
only; it is then multiplied by the row's ``row_mult`` (0 on padding packs). The table is built once
per call as a small ``[span kinds, token types]`` tensor and applied to all rows with one gather.

| context | span kind | struct | desc | eos |
|---|---|---|---|---|
| gt | body | ``w_s`` | ``w_d`` | — |
| gt, rollout | closure | 1.0 | 1.0 | — |
| gt, rollout | eos | — | — | 1.0 |
| self_context | body, closure, eos | ``w_sc`` | 0 | ``w_sc`` |
| rollout | prefix_open, prefix_matched | ``w_mp`` | 0 | — |
| rollout | fn | ``w_s`` | ``w_fd`` | — |

Coord rows are 0 everywhere (coord tokens never get full-vocab CE, C2); ``prefix_fp`` rows are not
rows at all. A closure token is always typed struct in practice; the table also gives 1.0 to a
(never observed) desc-typed closure token so that "closure is always supervised" holds by
construction.
"""

from __future__ import annotations

import attrs
import torch

from coordexp.core.context import TeacherForcingContext
from coordexp.core.tokens import ContextName, SpanKind, TokenType

__all__ = [
    "DEFAULT_TOKEN_WEIGHTS",
    "TEXT_CONTEXTS",
    "TokenWeights",
    "text_gate_rows",
    "token_base_weights",
    "token_row_weights",
    "weight_table",
]

#: Contexts whose text rows token_ce supervises with the gt/rollout weights (not self_context).
TEXT_CONTEXTS = frozenset({ContextName.GT, ContextName.ROLLOUT})

_N_SPANS = max(SpanKind) + 1
_N_TYPES = max(TokenType) + 1


@attrs.frozen
class TokenWeights:
    """Resolved token_ce row weights (spec 02 §2.4 symbols), all finite ``>= 0``.

    Attributes:
        struct: ``w_s`` (gt struct, FN-injected struct).
        desc: ``w_d`` (gt desc).
        fn_desc: ``w_fd`` (FN-injected desc; already resolved from ``desc`` when inherited).
        matched_prefix_struct: ``w_mp`` (``prefix_open`` and ``prefix_matched`` struct).
        self_context_struct: ``w_sc`` (self_context struct, closure and eos).
    """

    struct: float = 1.0
    desc: float = 1.0
    fn_desc: float = 1.0
    matched_prefix_struct: float = 1.0
    self_context_struct: float = 0.0


#: The token_ce defaults of spec 05 §5.3 (``w_fd`` resolved from ``w_d``).
DEFAULT_TOKEN_WEIGHTS = TokenWeights()


def weight_table(context: ContextName | str, weights: TokenWeights) -> list[list[float]]:
    """``table[span_kind][token_type]`` = the §2.4 token_ce weight (before ``row_mult``)."""
    name = ContextName(context)
    table = [[0.0] * _N_TYPES for _ in range(_N_SPANS)]
    struct, desc, eos = int(TokenType.STRUCT), int(TokenType.DESC), int(TokenType.EOS)

    def put(span: SpanKind, values: dict[int, float]) -> None:
        for token_type, value in values.items():
            table[int(span)][token_type] = float(value)

    if name is ContextName.SELF_CONTEXT:
        w_sc = weights.self_context_struct
        put(SpanKind.BODY, {struct: w_sc})
        put(SpanKind.CLOSURE, {struct: w_sc})
        put(SpanKind.EOS, {eos: w_sc})
        return table
    put(SpanKind.CLOSURE, {struct: 1.0, desc: 1.0})
    put(SpanKind.EOS, {eos: 1.0})
    if name is ContextName.GT:
        put(SpanKind.BODY, {struct: weights.struct, desc: weights.desc})
    else:
        put(SpanKind.PREFIX_OPEN, {struct: weights.matched_prefix_struct})
        put(SpanKind.PREFIX_MATCHED, {struct: weights.matched_prefix_struct})
        put(SpanKind.FN, {struct: weights.struct, desc: weights.fn_desc})
    return table


def token_base_weights(ctx: TeacherForcingContext, weights: TokenWeights) -> torch.Tensor:
    """Float32 ``[N]``: each row's §2.4 token_ce weight, before ``row_mult`` (metadata only)."""
    table = torch.tensor(weight_table(ctx.name, weights), dtype=torch.float32, device=ctx.device)
    return table[ctx.span_kind, ctx.token_type]


def token_row_weights(ctx: TeacherForcingContext, weights: TokenWeights) -> torch.Tensor:
    """Float32 ``[N]``: ``w_r`` = §2.4 weight × ``row_mult`` (0 at coord rows and padding)."""
    return token_base_weights(ctx, weights) * ctx.row_mult.to(torch.float32)


def text_gate_rows(ctx: TeacherForcingContext, weights: TokenWeights) -> torch.Tensor:
    """Long ``[N_g]``: rows of a text context (gt, rollout) that carry the ``text_gate`` term.

    Exactly the §2.4 ✓ marks: the rows whose token_ce weight is > 0 under ``weights``, minus eos
    (C8). The set does not depend on ``row_mult`` (padding rows stay in the set with weight 0).
    self_context has no text-gate rows.
    """
    if ctx.name not in TEXT_CONTEXTS:
        return torch.zeros(0, dtype=torch.long, device=ctx.device)
    keep = (token_base_weights(ctx, weights) > 0) & (ctx.token_type != int(TokenType.EOS))
    return torch.nonzero(keep).reshape(-1)
