"""coordexp.testing: the plugin author's kit (context factory, hypothesis strategies, conformance suite).

Shipped with coordexp-core; modules here may import hypothesis, a test-only dependency.
"""
