"""Trained models: checkpoint files (weights + metadata), the catalog of shipped models and their weights."""
