"""Layers shared by several architectures."""
