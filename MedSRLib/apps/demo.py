"""``medsr demo``: the README's first command, end to end on a real scan.

Fetches Colin27 (a real T1, held out from training) and runs the evaluation protocol's isotropic ×2 row on it
(docs/protocol.md): the reference mapped to [0, 1] and cropped to even sizes, a 2 mm version of it by exact 2×2×2 area
averaging, super-resolved back to 1 mm by cubic B-spline (the baseline every method must beat) and by the best shipped
method. It writes the four volumes (in the protocol's [0, 1] intensities), returns PSNR and SSIM against the 1 mm
reference, and draws ``comparison.png``: one column per volume (2 mm input, B-spline, the method, reference) showing
the middle axial slice with its orientation letters, a zoomed inset of the slice's densest detail below it, and the
scores spelled out under each column.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage
from skimage.feature import canny

from MedSRLib.api import super_resolve
from MedSRLib.evaluation.datasets import dataset_path, fetch_datasets
from MedSRLib.evaluation.metrics import FOREGROUND_THRESHOLD, compare
from MedSRLib.evaluation.protocol import Degradation
from MedSRLib.grid.geometry import output_grid
from MedSRLib.io.volume import Volume
from MedSRLib.io.volume_files import read_volume, write_volume
from MedSRLib.progress import ProgressCallback

# The best shipped method for isotropic x2 on held-out Colin27 (`python -m MedSRLib.evaluation --rows isotropic-2
# --methods bspline lanczos threeplayer --checkpoint threeplayer=threeplayer-x2`): the shipped threeplayer-x2 model,
# 35.59 dB against Lanczos-3's 33.83 dB and cubic B-spline's 33.54 dB. Named, because on a CPU the method's default
# is its fast variant.
DEMO_METHOD = "threeplayer"
DEMO_MODEL = "threeplayer-x2"
BASELINE_METHOD = "bspline"
SCALE = 2

# Picture: each slice voxel is SLICE_ZOOM × SLICE_ZOOM pixels (Colin27's axial slice: 540 × 648 per column, 2210 px
# wide in all); the inset shows INSET_VOXELS × INSET_VOXELS voxels at the column's width.
SLICE_ZOOM = 3
INSET_VOXELS = 45
# The inset stays this far inside the head's outline: the scalp and skull (about 1 cm, 10 voxels of Colin27) have
# dense edges too, but the detail super-resolution is judged on is the brain's.
HEAD_MARGIN_VOXELS = 10
GAP = 10
TITLE_SIZE, LETTER_SIZE, CAPTION_SIZE = 28, 26, 22
MARK = (255, 210, 0)  # orientation letters and the inset's box

# The patient side at the negative and positive end of each LPS axis.
LPS_SIDES = (("R", "L"), ("A", "P"), ("I", "S"))


@dataclass(frozen=True)
class Panel:
    """One column of the picture: a volume on the reference grid in [0, 1] and its scores against the reference
    (None for the reference itself)."""
    title: str
    array: np.ndarray
    scores: Optional[Dict[str, float]]
    reference_label: str

    @property
    def caption(self) -> List[str]:
        if self.scores is None:
            return ["the truth the others are scored against"]
        return [f"PSNR vs {self.reference_label}: {self.scores['psnr']:.2f} dB",
                f"SSIM vs {self.reference_label}: {self.scores['ssim']:.4f}"]


@dataclass(frozen=True)
class SliceView:
    """How the picture shows the axial slices of a (k, j, i) array: which array axis runs down and which across,
    whether each is reversed, and the patient side (R/L, A/P, S/I) at each edge of the picture."""
    normal_axis: int
    down_axis: int
    across_axis: int
    flip_down: bool
    flip_across: bool
    edges: Dict[str, str]

    def image(self, array: np.ndarray, index: int) -> np.ndarray:
        plane = np.moveaxis(array, (self.down_axis, self.across_axis), (0, 1))[:, :, index]
        return plane[::-1 if self.flip_down else 1, ::-1 if self.flip_across else 1]


@dataclass(frozen=True)
class DemoResult:
    picture: Path
    panels: List[Panel]
    view: SliceView
    slice_index: int
    inset: Tuple[int, int, int]  # top, left, size in pixels of the displayed slice


def patient_side(vector: Sequence[float]) -> str:
    """The patient side an LPS ``vector`` points to most: R, L, A, P, I or S."""
    axis = int(np.argmax(np.abs(vector)))
    return LPS_SIDES[axis][int(vector[axis] > 0)]


def axial_view(direction: Sequence[float]) -> SliceView:
    """The axial view of a volume with this (row-major, LPS) ``direction``, in the radiological convention 3D Slicer
    shows: the slices are those of the array axis closest to inferior–superior; the patient's left is on the right of
    the picture and posterior at the bottom, whatever the order and sign of the array axes."""
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    vectors = [matrix[:, 2 - axis] for axis in range(3)]  # the LPS direction of array axes k, j, i
    normal = max(range(3), key=lambda axis: abs(vectors[axis][2]))
    in_plane = [axis for axis in range(3) if axis != normal]
    across = max(in_plane, key=lambda axis: abs(vectors[axis][0]))
    down = next(axis for axis in in_plane if axis != across)
    flip_across, flip_down = patient_side(vectors[across]) != "L", patient_side(vectors[down]) != "P"
    left, right = (patient_side(sign * vectors[across]) for sign in ((1, -1) if flip_across else (-1, 1)))
    top, bottom = (patient_side(sign * vectors[down]) for sign in ((1, -1) if flip_down else (-1, 1)))
    return SliceView(normal, down, across, flip_down, flip_across,
                     {"top": top, "bottom": bottom, "left": left, "right": right})


def window_sums(field: np.ndarray, size: int) -> np.ndarray:
    """The sum of ``field`` over every ``size`` × ``size`` window, indexed by the window's top-left pixel."""
    integral = np.pad(field.astype(np.float64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    return integral[size:, size:] - integral[:-size, size:] - integral[size:, :-size] + integral[:-size, :-size]


def detail_window(image: np.ndarray, size: int, margin: int = HEAD_MARGIN_VOXELS) -> Tuple[int, int]:
    """The top-left pixel of the ``size`` × ``size`` window of ``image`` (in [0, 1]) with the most Canny edge pixels,
    among the windows at least ``margin`` pixels inside the head's outline (anywhere when none fits).

    Edge density, not gradient energy: a T1 head's strongest edges are the scalp and the ventricles, smooth at 1 mm,
    while the fine detail a 2 mm scan loses is many weaker edges close together (cortex and gyri).
    """
    head = ndimage.binary_fill_holes(image > FOREGROUND_THRESHOLD)
    inside = ndimage.binary_erosion(head, iterations=margin)
    fits = window_sums(inside, size) == size * size
    density = window_sums(canny(image.astype(np.float64), sigma=1.0), size)
    if fits.any():
        density = np.where(fits, density, -1.0)
    top, left = np.unravel_index(int(np.argmax(density)), density.shape)
    return int(top), int(left)


def no_log(line: str) -> None:
    """Discard a stage line."""


def run_demo(output_dir, method: str = DEMO_METHOD, checkpoint: Optional[str] = DEMO_MODEL,
             progress: Optional[ProgressCallback] = None, log: Callable[[str], None] = no_log) -> DemoResult:
    """Fetch Colin27 (once) and :func:`compare_methods` on it."""
    log("fetching Colin27 into the data cache (once)")
    fetch_datasets(names=["colin27"])
    return compare_methods(read_volume(dataset_path("colin27")), "Colin27", output_dir, method, checkpoint, progress,
                           log)


def compare_methods(reference: Volume, name: str, output_dir, method: str = DEMO_METHOD,
                    checkpoint: Optional[str] = None, progress: Optional[ProgressCallback] = None,
                    log: Callable[[str], None] = no_log, inset_voxels: int = INSET_VOXELS) -> DemoResult:
    """The demo on any 3D ``reference``: the protocol's ×2 degradation, B-spline and ``method`` (with ``checkpoint``,
    else its default model) back to its grid, the
    four volumes written into ``output_dir`` as ``<name>_2mm.nrrd``, ``…_x2_bspline.nrrd``, ``…_x2_<method>.nrrd``
    and ``<name>_1mm_reference.nrrd`` (spelled with the actual spacings), scores, and ``comparison.png``."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # Steps 1–3 of the protocol: [0, 1] by the 0.5 / 99.5 percentiles, cropped to a multiple of 2, exact area average.
    hr, lr = Degradation("isotropic", SCALE).apply(reference.array)
    hr_spacing = max(reference.spacing)
    hr_label, lr_label = f"{hr_spacing:g} mm", f"{SCALE * hr_spacing:g} mm"
    lr_grid = output_grid(hr.shape[::-1], reference.spacing, reference.origin, reference.direction, [1 / SCALE] * 3)
    low_resolution = Volume(lr, lr_grid.spacing, lr_grid.origin, lr_grid.direction)
    high_resolution = Volume(hr, reference.spacing, reference.origin, reference.direction)
    lr_stem, hr_stem = (f"{name.lower()}_{spacing:g}mm" for spacing in (SCALE * hr_spacing, hr_spacing))

    log(f"super-resolving the {lr_label} version back to {hr_label} with {method}")
    result = protocol_super_resolve(low_resolution, method, progress, checkpoint)
    method_label = result.metadata.get("checkpoint") or method  # the shipped model's name for learned methods
    log(f"the same with cubic B-spline, the baseline; writing the volumes into {output_dir}")
    baseline = protocol_super_resolve(low_resolution, BASELINE_METHOD)
    for volume, file_name in ((low_resolution, f"{lr_stem}.nrrd"), (baseline, f"{lr_stem}_x2_{BASELINE_METHOD}.nrrd"),
                              (result, f"{lr_stem}_x2_{method}.nrrd"), (high_resolution, f"{hr_stem}_reference.nrrd")):
        write_volume(volume, output_dir / file_name)

    log(f"scoring against the {hr_label} reference (PSNR, 3D SSIM)")
    reference_label = f"{hr_label} reference"
    nearest = protocol_super_resolve(low_resolution, "nearest").array
    panels = [Panel(f"{lr_label} input (nearest neighbour)", nearest, scored(nearest, hr), reference_label),
              Panel("cubic B-spline", baseline.array, scored(baseline.array, hr), reference_label),
              Panel(method_label, result.array, scored(result.array, hr), reference_label),
              Panel(reference_label, hr, None, reference_label)]

    view = axial_view(reference.direction)
    slice_index = hr.shape[view.normal_axis] // 2
    reference_slice = view.image(hr, slice_index)
    inset = (*detail_window(reference_slice, inset_voxels), inset_voxels)
    footer = [f"{name}, axial slice {slice_index + 1} of {hr.shape[view.normal_axis]}, "
              "radiological view (the patient's right on the left).",
              f"Box: the {inset_voxels * min(reference.spacing):g} mm wide region with the slice's densest edges, "
              "zoomed below. Scores over the whole volume, as the evaluation protocol computes them."]
    picture = output_dir / "comparison.png"
    draw_comparison([view.image(panel.array, slice_index) for panel in panels], panels, view.edges, inset, footer,
                    picture)
    return DemoResult(picture, panels, view, slice_index, inset)


def protocol_super_resolve(low_resolution: Volume, method: str, progress: Optional[ProgressCallback] = None,
                           checkpoint: Optional[str] = None) -> Volume:
    # The input is already in the protocol's [0, 1]; the window 0.5 ± 0.5 maps it onto itself, so the method sees
    # exactly the protocol's array and the scores equal `python -m MedSRLib.evaluation`'s.
    return super_resolve(low_resolution, method, SCALE, normalisation="window", window=(0.5, 1.0), progress=progress,
                         checkpoint=checkpoint)


def scored(array: np.ndarray, reference: np.ndarray) -> Dict[str, float]:
    """The protocol's scores (metrics.compare) of a result clipped to [0, 1], as the protocol clips it."""
    return compare(np.clip(array, 0, 1), reference)


def format_scores(panels: Sequence[Panel]) -> str:
    """The scored panels as a table: PSNR, foreground PSNR (dB) and SSIM against the reference."""
    scored_panels = [panel for panel in panels if panel.scores is not None]
    width = max(len(panel.title) for panel in scored_panels)
    lines = [f"against the {scored_panels[0].reference_label} (whole volume, evaluation protocol):",
             f"{'':<{width}}  PSNR (dB)  foreground PSNR (dB)    SSIM"]
    lines += [f"{panel.title:<{width}}  {panel.scores['psnr']:9.2f}  {panel.scores['psnr_foreground']:20.2f}  "
              f"{panel.scores['ssim']:.4f}" for panel in scored_panels]
    return "\n".join(lines)


def draw_comparison(slices: Sequence[np.ndarray], panels: Sequence[Panel], edges: Dict[str, str],
                    inset: Tuple[int, int, int], footer: Sequence[str], path) -> None:
    """One column per panel: its title, the slice (orientation letters at the edges, the inset's box), the inset
    below, the caption; the footer lines across the bottom."""
    title_font, letter_font, caption_font = (ImageFont.load_default(size) for size in
                                             (TITLE_SIZE, LETTER_SIZE, CAPTION_SIZE))
    top, left, size = inset
    slice_height, slice_width = (n * SLICE_ZOOM for n in slices[0].shape)
    inset_zoom = slice_width // size
    caption_top = TITLE_SIZE + 2 * GAP + slice_height + GAP + size * inset_zoom + GAP
    caption_lines = max(len(panel.caption) for panel in panels)
    footer_top = caption_top + caption_lines * (CAPTION_SIZE + GAP) + GAP
    height = footer_top + len(footer) * (CAPTION_SIZE + GAP) + GAP
    canvas = Image.new("RGB", (len(slices) * (slice_width + GAP) + GAP, height), (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    for column, (image, panel) in enumerate(zip(slices, panels)):
        x = GAP + column * (slice_width + GAP)
        y = TITLE_SIZE + 2 * GAP
        draw.text((x, GAP), panel.title, fill=(255, 255, 255), font=title_font)
        canvas.paste(to_pixels(image, SLICE_ZOOM), (x, y))
        draw.rectangle((x + left * SLICE_ZOOM, y + top * SLICE_ZOOM, x + (left + size) * SLICE_ZOOM - 1,
                        y + (top + size) * SLICE_ZOOM - 1), outline=MARK, width=2)
        for edge, anchor, position in (("top", "mt", (x + slice_width // 2, y + 4)),
                                       ("bottom", "mb", (x + slice_width // 2, y + slice_height - 4)),
                                       ("left", "lm", (x + 6, y + slice_height // 2)),
                                       ("right", "rm", (x + slice_width - 6, y + slice_height // 2))):
            draw.text(position, edges[edge], fill=MARK, font=letter_font, anchor=anchor)
        inset_y = y + slice_height + GAP
        canvas.paste(to_pixels(image[top:top + size, left:left + size], inset_zoom), (x, inset_y))
        draw.rectangle((x, inset_y, x + size * inset_zoom - 1, inset_y + size * inset_zoom - 1), outline=MARK, width=2)
        draw_caption(draw, (x, caption_top), panel.caption, caption_font, (255, 255, 255))
    draw_caption(draw, (GAP, footer_top), footer, caption_font, (190, 190, 190))
    canvas.save(path)


def draw_caption(draw: ImageDraw.ImageDraw, origin: Tuple[int, int], lines: Sequence[str], font, fill) -> None:
    x, y = origin
    for number, line in enumerate(lines):
        draw.text((x, y + number * (CAPTION_SIZE + GAP)), line, fill=fill, font=font)


def to_pixels(image: np.ndarray, zoom: int) -> Image.Image:
    """A [0, 1] slice as 8-bit grey, each voxel a ``zoom`` × ``zoom`` block (no smoothing: voxels stay visible)."""
    grey = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    return Image.fromarray(np.kron(grey, np.ones((zoom, zoom), dtype=np.uint8))).convert("RGB")
