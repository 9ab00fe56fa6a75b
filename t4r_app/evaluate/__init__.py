"""Evaluation stage: one ranking protocol for the model and the baselines, metrics, and the report."""
