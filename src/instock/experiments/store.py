"""Experiment tables (filled in by the experiments work)."""
