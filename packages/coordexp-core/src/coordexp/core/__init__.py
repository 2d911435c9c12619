"""coordexp.core — see docs/architecture.md."""
