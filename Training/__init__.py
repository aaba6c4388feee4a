"""Training framework for MedSR's learned methods: YAML configs, on-the-fly patch data, GAN recipes, validation with
the DATA.md protocol, resumable state, DDP. ``python -m Training.train --config Training/configs/threeplayer-x2.yaml``.
"""
