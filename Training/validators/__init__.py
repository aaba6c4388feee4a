"""Validators: scores of the network being trained on a training-split volume it does not train on. Importing this
package registers the built-in ones."""
from . import arbitrary_scale, corruption_accuracy, in_plane_2d, protocol_3d, simulated_thick, tissue_dice  # noqa: F401
