"""Samplers: each makes the batch of a step from (seed, step, rank) alone, so a resumed run repeats an uninterrupted
one exactly. Importing this package registers the built-in ones."""
from . import arbitrary_scale, corruptions, paired, tissue, unpaired  # noqa: F401
