"""Stages turn raw samples into micro-batches and teacher-forcing contexts; the executor owns the loop."""
