import numpy as np
import pytest
from scipy import ndimage

from MedSRLib.evaluation import metrics
from MedSRLib.errors import InputError


@pytest.fixture
def reference():
    return np.random.default_rng(0).random((12, 14, 16))


def blurred_sphere(sigma, radius=20, size=64):
    k, j, i = np.mgrid[:size, :size, :size] - size / 2
    return ndimage.gaussian_filter((np.sqrt(k ** 2 + j ** 2 + i ** 2) < radius).astype(float), sigma)


def test_psnr_of_a_constant_offset():
    ref = np.zeros((8, 8, 8))
    # MSE 0.01 → 10·log10(1 / 0.01) = 20 dB.
    assert metrics.psnr(ref + 0.1, ref) == pytest.approx(20)
    mask = np.zeros(ref.shape, bool)
    mask[:4] = True
    sr = ref.copy()
    sr[:4] = 0.01
    sr[4:] = 0.5
    assert metrics.psnr(sr, ref, mask=mask) == pytest.approx(40)
    assert metrics.psnr(ref, ref) == float("inf")


def test_mismatched_shapes_and_empty_masks_are_refused(reference):
    with pytest.raises(InputError, match="same grid"):
        metrics.psnr(reference[:-1], reference)
    with pytest.raises(InputError, match="mask"):
        metrics.ssim(reference, reference, mask=np.zeros(reference.shape, bool))


def test_ssim_is_one_for_identical_arrays_and_drops_with_noise(reference):
    assert metrics.ssim(reference, reference) == pytest.approx(1)
    noisy = reference + np.random.default_rng(1).normal(0, 0.2, reference.shape)
    score = metrics.ssim(noisy, reference)
    assert score < 0.9
    # A mask covering everything gives the unmasked mean (both leave out the window's border).
    assert metrics.ssim(noisy, reference, mask=np.ones(reference.shape, bool)) == pytest.approx(score)


def test_masked_ssim_averages_only_inside_the_mask(reference):
    damaged = reference.copy()
    damaged[:, :, 8:] = 0
    mask = np.zeros(reference.shape, bool)
    mask[:, :, :4] = True
    # The window (7 voxels) around the masked voxels never reaches the damaged half.
    assert metrics.ssim(damaged, reference, mask=mask) == pytest.approx(1)
    assert metrics.ssim(damaged, reference) < 0.9


def test_slicewise_ssim_sees_a_single_damaged_slice(reference):
    assert metrics.ssim_slicewise(reference, reference, axis=0) == pytest.approx(1)
    damaged = reference.copy()
    damaged[5] = 0
    per_slice = [metrics.ssim(damaged[k], reference[k]) for k in range(12)]
    assert metrics.ssim_slicewise(damaged, reference, axis=0) == pytest.approx(np.mean(per_slice))
    assert per_slice[5] < 0.1 and per_slice[4] == pytest.approx(1)


def test_nrmse_is_relative_to_the_reference_norm(reference):
    assert metrics.nrmse(1.1 * reference, reference) == pytest.approx(0.1)
    with pytest.raises(InputError, match="zero"):
        metrics.nrmse(reference, np.zeros_like(reference))


def test_compare_reports_the_protocol_numbers():
    ref = np.zeros((10, 10, 10))
    ref[:5] = 0.8
    sr = ref + 0.01
    sr[:5] += 0.09
    scores = metrics.compare(sr, ref)
    assert set(scores) == {"psnr", "psnr_foreground", "ssim", "nrmse"}
    # Foreground (ref > 0.1) is the first half, where the error is 0.1 → 20 dB.
    assert scores["psnr_foreground"] == pytest.approx(20)
    assert scores["psnr"] == pytest.approx(10 * np.log10(1 / ((0.01 + 0.0001) / 2)))


def test_edge_sharpness_of_a_blurred_step():
    sphere = blurred_sphere(2.0)
    # A step blurred by a Gaussian of σ mm has a largest slope of 1 / (σ·sqrt(2π)) ≈ 0.40 / σ.
    expected = 1 / (2.0 * np.sqrt(2 * np.pi))
    assert metrics.edge_sharpness(sphere, (1, 1, 1)) == pytest.approx(expected, rel=0.05)
    # Half the voxel size in mm makes the same voxels twice as sharp per mm.
    assert metrics.edge_sharpness(sphere, (0.5, 0.5, 0.5)) == pytest.approx(2 * expected, rel=0.05)
    assert metrics.edge_sharpness(blurred_sphere(1.0), (1, 1, 1)) > 1.5 * expected


def test_edge_sharpness_along_one_axis_sees_through_plane_blur():
    sphere = ndimage.gaussian_filter(blurred_sphere(1.0), (3, 0, 0))
    through_plane = metrics.edge_sharpness(sphere, (1, 1, 1), axis=0)
    in_plane = metrics.edge_sharpness(sphere, (1, 1, 1), axis=2)
    assert through_plane < 0.6 * in_plane
    points = metrics.find_edge_points(sphere, (1, 1, 1), axis=0)
    assert len(points) > 0
    assert metrics.edge_sharpness(sphere, (1, 1, 1), points=points) == pytest.approx(through_plane)


def test_edge_sharpness_needs_a_border():
    with pytest.raises(InputError, match="border"):
        # A gentle ramp: 9-voxel profiles span 4% of the range, below the 20% contrast of a border.
        metrics.edge_sharpness(np.arange(200.0)[:, None, None] * np.ones((1, 8, 8)), (1, 1, 1))


def test_piqe_scores_blur_worse_than_the_original(colin27):
    volume = colin27[60:66].astype(np.float32)
    sharp = metrics.piqe_slicewise(volume, axis=0)
    blurred = metrics.piqe_slicewise(ndimage.gaussian_filter(volume, (0, 2, 2)), axis=0)
    assert 0 <= sharp < blurred <= 100


def test_piqe_needs_foreground_slices():
    volume = np.zeros((4, 32, 32))
    volume[0, 10, 10] = 1
    with pytest.raises(InputError, match="foreground"):
        metrics.piqe_slicewise(volume, axis=0)
