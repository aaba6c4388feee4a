"""Registered architectures, one per file; ``MedSRLib.nn.build_network`` imports them all."""
