"""TransMRSR (seed 002; METHODS.md §2): pretrained through-plane super-resolution of thick-slice scans — the pretrained
counterpart of SMORE, with no training at the user's side.

The scan is interpolated onto the output grid (cubic B-spline) and a 2D network (``nn.nets.transmrsr``: shallow
convs, a Swin encoder, a StyleSwin-like generative-prior decoder with self-distilled truncation, CWSS) refines the
slices that cut through the thick axis, both through-plane orientations averaged by default (the engine's
through-plane mode). Without a scale the thick axis and factor come from the spacing, as for SMORE (``--scale auto``);
a scale along another axis than the spacing's thick one is refused unless ``force_scale``. The checkpoint names the
thick factors it serves: one factor (the shipped ×4 and ×8 models, the defaults at their factors) or a range (the
shipped range model, every other factor from 2.5 to 8). Train with ``Training/configs/transmrsr-prior-cpu.yaml``
(stage 1) then ``transmrsr-x4-cpu.yaml`` (stage 2), ``transmrsr-x8-cpu.yaml`` or ``transmrsr-range-cpu.yaml``.
"""
from MedSRLib.errors import InputError
from MedSRLib.grid.geometry import detect_thick_axis, format_scale
from .base import RunSettings, register
from .network import SliceNetworkMethod
from .options import MethodOption


@register
class TransMRSR(SliceNetworkMethod):
    name = "transmrsr"
    description = ("TransMRSR: pretrained through-plane SR of thick-slice scans — Swin encoder, generative-prior "
                   "decoder with self-distilled truncation; refines the interpolated scan's through-plane slices; "
                   "scale = spacing ratio.")
    axes = "2d-through-plane"
    orientations = 2
    options = (
        MethodOption("both_orientations", "bool", "average the refinements of both through-plane orientations; off: "
                     "refine the slices along the first in-plane array axis only (half the time)", default=True),
        MethodOption("force_scale", "bool", "trust the scale over the spacing: refine along the scaled axis even "
                     "when the spacing says another axis is the thick one", default=False),
    )
    # Whole slices (None): the network pads them to multiples of 64 and attends across the slice. Per output pixel,
    # in float32 values: the shallow, encoder and decoder maps of the finest level (32 channels at a quarter of the
    # pixels, a dozen alive at once in the Swin and style layers) and the coarser levels.
    activation_factor = 128.0

    def default_scale(self, spacing_xyz, checkpoint=None):
        """"auto": the thick axis made isotropic."""
        return "auto"

    def orientations_to_refine(self, model_settings, settings: RunSettings) -> int:
        return 2 if self.option_values(settings.options)["both_orientations"] else 1

    def run(self, image, scale_xyz, spacing, settings: RunSettings):
        thick = detect_thick_axis(spacing)
        scaled = [axis for axis in range(3) if scale_xyz[axis] > 1]
        if thick is not None and scaled != [thick.axis] and not self.option_values(settings.options)["force_scale"]:
            spacing_text = format_scale(tuple(round(s, 3) for s in spacing))
            raise InputError(f"Method '{self.name}' super-resolves the thick axis: for spacing {spacing_text} mm give "
                             f"a scale such as {format_scale(thick.scale())}, not {format_scale(scale_xyz)} (or "
                             "force_scale=True to trust the scale).")
        return super().run(image, scale_xyz, spacing, settings)
