"""coordexp.losses — see docs/architecture.md."""
