"""Deterministic synthetic data generators (template head model, IST-3-like CT cohort)."""
