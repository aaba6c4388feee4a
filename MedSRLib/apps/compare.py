"""What the MedSR compare view shows, without Qt or Slicer, so CI can test it: a result's difference to cubic B-spline
with the window that centres it at 0, the field of view of zoomed slice views, and the scores of a result and of
B-spline against a reference volume on the same grid.
``MedSRLib.apps.worker`` computes the difference and the scores in the background process; ``MedSRLib.apps.mrml``
puts them into the scene; ``MedSR/MedSR.py`` sets the slice views' fields of view.
"""
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from MedSRLib.errors import InputError
from MedSRLib.evaluation.metrics import compare
from MedSRLib.grid.intensity import Normaliser
from MedSRLib.io.volume import Volume
from MedSRLib.progress import ProgressCallback, report

# The difference's window reaches from minus to plus this percentile of |result − B-spline|, so a few extreme voxels
# do not wash out the rest.
DIFFERENCE_RANGE_PERCENTILE = 99.0
# Two volumes are on the same grid when their shapes agree and their spacing, origin and directions agree this closely.
GRID_TOLERANCE = 1e-4


def difference_to_bspline(result: Volume, bspline: Volume) -> Volume:
    """result − B-spline voxel for voxel, as float32 on the result's grid (``bspline`` is the B-spline comparison on
    the same grid). Its metadata are the result's, with ``difference_to`` and ``display_half_width``: the
    DIFFERENCE_RANGE_PERCENTILE-th percentile of |difference| (the largest |difference| where that is 0, 1 where the
    two agree everywhere), the half width of a window centred at 0."""
    if result.array.shape != bspline.array.shape:
        raise InputError(f"The B-spline comparison has shape {bspline.array.shape}, not the result's "
                         f"{result.array.shape}.")
    difference = result.array.astype(np.float32) - bspline.array.astype(np.float32)
    magnitude = np.abs(difference)
    half_width = float(np.percentile(magnitude, DIFFERENCE_RANGE_PERCENTILE)) or float(magnitude.max()) or 1.0
    volume = result.with_array(difference)
    volume.metadata.update(difference_to="bspline", display_half_width=half_width)
    return volume


def symmetric_window(half_width: float) -> Tuple[float, float]:
    """(window, level) of a display centred at 0 that spans [−half_width, half_width]."""
    return 2.0 * half_width, 0.0


def extent_in_slice_plane(ijk_to_ras: np.ndarray, dimensions_ijk: Sequence[int],
                          slice_to_ras: np.ndarray) -> Tuple[float, float]:
    """Width and height (mm) of a volume's box, from voxel edge to voxel edge, along a slice view's x and y axes
    (the first two columns of its SliceToRAS matrix): the spread of the box's 8 corners."""
    corners = np.array([[i, j, k, 1.0] for i in (-0.5, dimensions_ijk[0] - 0.5)
                        for j in (-0.5, dimensions_ijk[1] - 0.5) for k in (-0.5, dimensions_ijk[2] - 0.5)])
    corners_ras = corners @ np.asarray(ijk_to_ras, dtype=float).T
    in_plane = corners_ras[:, :3] @ np.asarray(slice_to_ras, dtype=float)[:3, :2]
    width, height = in_plane.max(axis=0) - in_plane.min(axis=0)
    return float(width), float(height)


def zoomed_field_of_view(extent_mm: Sequence[float], view_pixels: Sequence[int], zoom: float) -> Tuple[float, float]:
    """A slice view's field of view (x, y in mm) showing ``zoom`` times magnified what fits the whole ``extent_mm``
    (width, height) into a view of ``view_pixels`` (width, height): at zoom 1 the extent's tighter side fills the view
    and the other side follows the view's shape, so pixels stay square; zoom 2 shows half of that around the view's
    centre."""
    if zoom <= 0:
        raise InputError(f"The zoom must be above 0, not {zoom:g}.")
    width, height = extent_mm
    view_aspect = view_pixels[1] / view_pixels[0]
    if height / width > view_aspect:  # taller than the view: the height fills it
        fitted = (height / view_aspect, height)
    else:
        fitted = (width, width * view_aspect)
    return fitted[0] / zoom, fitted[1] / zoom


def _same_grid(volume: Volume, reference: Volume) -> bool:
    return volume.array.shape == reference.array.shape and all(
        np.allclose(getattr(volume, part), getattr(reference, part), atol=GRID_TOLERANCE)
        for part in ("spacing", "origin", "direction"))


def _describe_grid(volume: Volume) -> str:
    return (f"{'×'.join(str(n) for n in volume.size)} voxels of {'×'.join(f'{v:g}' for v in volume.spacing)} mm "
            f"at ({', '.join(f'{v:g}' for v in volume.origin)})")


def scores_against_reference(volumes: Dict[str, Volume], reference: Volume,
                             progress: Optional[ProgressCallback] = None) -> Dict[str, dict]:
    """:func:`MedSRLib.evaluation.metrics.compare`'s scores (PSNR, PSNR foreground, SSIM, NRMSE) of each of
    ``volumes`` (by method name) against ``reference``, normalised as the evaluation protocol does
    (docs/protocol.md): the reference's 0.5 and 99.5 percentiles mapped to [0, 1] and clipped, for the reference and
    each volume alike; ``progress`` counts the volumes scored. A volume on another grid than the reference is one
    sentence (InputError)."""
    for name, volume in volumes.items():
        if not _same_grid(volume, reference):
            raise InputError(f"The reference ({_describe_grid(reference)}) and the {name} result "
                             f"({_describe_grid(volume)}) are on different grids, so no metrics: choose a reference "
                             "on the result's grid.")
    normaliser = Normaliser.fit(np.asarray(reference.array, dtype=np.float32), clip=True)
    normalised_reference = normaliser.forward(reference.array)
    scores = {}
    for name, volume in volumes.items():
        report(len(scores), len(volumes), progress)
        scores[name] = compare(normaliser.forward(volume.array), normalised_reference)
    report(len(scores), len(volumes), progress)
    return scores
