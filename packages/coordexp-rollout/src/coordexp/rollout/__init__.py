"""coordexp.rollout — see docs/architecture.md."""
