"""Evaluation: the held-out data sets, volume-level low-resolution simulation, metrics and the evaluation protocol
(``python -m MedSRLib.evaluation``)."""
