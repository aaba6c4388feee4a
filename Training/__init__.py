"""Training framework for MedSR's learned methods: YAML configs that choose a recipe, sampler, validator and exporter
from registries by name; on-the-fly data; validation on a training-split volume; resumable state; DDP; TensorBoard.
``python -m Training.train --config Training/configs/threeplayer-x2.yaml``.
"""
