"""coordexp.train — see docs/architecture.md."""
