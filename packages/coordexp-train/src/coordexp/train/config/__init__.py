"""coordexp.train.config — the training config system (spec 05 §5.6–§5.11).

Public API:

* :func:`load_config` (the training loader: validated typed sections + ``Strategy`` + resolved
  pipeline) and :func:`validate_config` (everything but pipeline resolution);
* :func:`to_yaml` (``coordexp config show``), :func:`cmd_preflight` / :func:`preflight_payload`
  (``coordexp config preflight``; the line itself is ``coordexp.train.config.preflight.preflight``,
  not re-exported here so that the name keeps meaning the submodule), :func:`validate_profiles`
  (``coordexp config validate-profiles``);
* :func:`gradient_accumulation_steps` (GAS for a world size, spec 04 §4.1);
* the typed sections in :mod:`.schema`. The reference is ``docs/configuration.md``.
"""

from __future__ import annotations

from .guardrails import gradient_accumulation_steps
from .loader import ResolvedConfig, ValidatedConfig, load_config, to_yaml, validate_config
from .preflight import cmd_preflight, preflight_payload
from .profiles import validate_profiles
from .schema import (
    CoordexpConfig,
    CustomSection,
    DebugDumpSection,
    DecodingSection,
    EvalDetectionSection,
    MatchingSection,
    ModelSection,
    PolyOTSection,
    RolloutMatchingSection,
    Stage1Section,
    Stage2ABSection,
    Stage2Schedule,
    TemplateSection,
    TrainingSection,
    VllmSection,
    VllmServer,
    VllmSync,
)

__all__ = [
    "CoordexpConfig",
    "CustomSection",
    "DebugDumpSection",
    "DecodingSection",
    "EvalDetectionSection",
    "MatchingSection",
    "ModelSection",
    "PolyOTSection",
    "ResolvedConfig",
    "RolloutMatchingSection",
    "Stage1Section",
    "Stage2ABSection",
    "Stage2Schedule",
    "TemplateSection",
    "TrainingSection",
    "ValidatedConfig",
    "VllmSection",
    "VllmServer",
    "VllmSync",
    "cmd_preflight",
    "gradient_accumulation_steps",
    "load_config",
    "preflight_payload",
    "to_yaml",
    "validate_config",
    "validate_profiles",
]
