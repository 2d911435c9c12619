"""Recipes: top-to-bottom functions that assemble components into a job (torchtune style)."""
