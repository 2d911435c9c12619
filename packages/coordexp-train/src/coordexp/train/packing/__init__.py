"""Packing plans: which samples share a padding-free micro-batch (spec 06 §6.7, 04 §4.1)."""
