"""The training framework's data and configs without the data cache: pair geometry on the corner-aligned grid, area
averaging, scale ranges, slice planes, the unpaired domains, and the config's choice of components."""
import json

import numpy as np
import pytest
import torch

from MedSRLib.engine.tiling import TilingOptions, run_tiled
from MedSRLib.errors import InputError
from MedSRLib.grid import degradation as library
from MedSRLib.grid.geometry import output_coordinates
from MedSRLib.io.volume import Volume
from MedSRLib.io.volume_files import write_volume
from Training.config import load_config
from Training.registry import Registry
from Training.samplers.arbitrary_scale import ArbitraryScaleSampler
from Training.samplers.degradation import FOURIER_PADDING, bspline_upsample, check_degradation, degrade
from Training.samplers.paired import PairedSampler
from Training.samplers.unpaired import ThickSliceScan, UnpairedThickSliceSampler, draw_scans, simulate_thick_slices
from Training.samplers.windows import WindowSampler, item_rng
from Training.scaling import ScaleRange, window_factors
from test_training_recipes import CoordinateNet

NO_AUGMENTATION = {}


def ramp(shape, slopes=(0.011, 0.007, 0.003)) -> np.ndarray:
    """A linear function of the voxel indices; its mean over whole voxels is its value at their centre."""
    grids = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij")
    return (0.1 + sum(slope * grid for slope, grid in zip(slopes, grids))).astype(np.float32)


def linear_fit_at(image: np.ndarray, coordinates: np.ndarray) -> np.ndarray:
    """The linear function of the voxel indices that ``image`` is (least squares), evaluated at ``coordinates``."""
    grids = np.meshgrid(*(np.arange(n) for n in image.shape), indexing="ij")
    design = np.stack([grid.ravel() for grid in grids] + [np.ones(image.size)], axis=1)
    coefficients = np.linalg.lstsq(design, image.ravel().astype(np.float64), rcond=None)[0]
    return np.tensordot(coefficients[:-1], coordinates, axes=1) + coefficients[-1]


def fixed_scale_sampler(volume, planes, factors, window=20) -> ArbitraryScaleSampler:
    windows = WindowSampler([volume], window, planes, 0.0, 0.0, NO_AUGMENTATION, seed=0)
    axes = (0, 1, 2) if planes is None else (1, 2)
    return ArbitraryScaleSampler(windows, ScaleRange(factors, factors), axes, batch=2, noise=0.0, seed=1)


@pytest.mark.parametrize("planes, factors", [(None, (2.0, 3.0, 1.0)), ([0, 1, 2], (1.0, 2.0, 4.0))])
def test_arbitrary_scale_coordinates_point_at_the_target_voxels(planes, factors):
    """Whole factors: an LR ramp, evaluated at the batch's coordinates (output voxel centres in LR indices), is the
    target exactly."""
    batch = fixed_scale_sampler(ramp((30, 30, 30)), planes, factors).batch(0)
    window_factors = tuple(batch["scale"][0].tolist())
    assert window_factors == (factors if planes is None else factors[1:])
    lr, target = batch["input"][:, 0].numpy(), batch["target"][:, 0].numpy()
    assert batch["coordinates"].shape == (2, len(window_factors), *target.shape[1:])
    for item in range(2):
        np.testing.assert_allclose(linear_fit_at(lr[item], batch["coordinates"][item].numpy()), target[item],
                                   atol=2e-5)


def test_arbitrary_scale_target_is_the_first_round_n_times_f_voxels_of_the_hr_window():
    """Float factors: the input is the exact area average of an HR window of 20 voxels (n = floor(20 / f)), and the
    target is that window's first round(n·f) voxels. Voxel values encode their indices, to find the window."""
    k, j, i = np.meshgrid(*(np.arange(30),) * 3, indexing="ij")
    factors = (2.5, 4 / 3, 1.5)
    batch = fixed_scale_sampler((k * 10000 + j * 100 + i).astype(np.float32), None, factors).batch(0)
    for lr, target in zip(batch["input"][:, 0].numpy(), batch["target"][:, 0].numpy()):
        corner = int(target[0, 0, 0])
        start = (corner // 10000, corner // 100 % 100, corner % 100)
        lengths = [int(np.floor(20 / f + 1e-9)) for f in factors]
        assert lr.shape == tuple(lengths)
        assert target.shape == tuple(int(round(n * f)) for n, f in zip(lengths, factors))
        hr_window = (k * 10000 + j * 100 + i)[tuple(slice(s, s + 20) for s in start)].astype(np.float64)
        np.testing.assert_array_equal(target, hr_window[tuple(slice(0, n) for n in target.shape)])
        np.testing.assert_allclose(lr, library.area_average(hr_window, factors), rtol=1e-6)


@pytest.mark.parametrize("mode, factors", [("3d", (1.5, 2.5, 1.0)), ("2d", (1.0, 2.5, 4 / 3))])
def test_the_engine_calls_a_coordinate_network_as_training_does(mode, factors):
    """One window covering the image: MedSRLib's tiling engine and the arbitrary-scale sampler's coordinates and
    scale (``output_coordinates``) make the network give the same output."""
    torch.manual_seed(0)
    network = CoordinateNet(dims=3 if mode == "3d" else 2)
    torch.nn.init.normal_(network.decode.weight)  # the output then depends on the features, coordinates and scale
    image = np.random.default_rng(0).random((6, 7, 8)).astype(np.float32)
    window = image.shape if mode == "3d" else image.shape[1:]
    options = TilingOptions(patch=window, mode=mode, slice_axis=0, conditioning="coordinates", device="cpu")
    engine = run_tiled(network, image, factors, options)
    window_factors = factors if mode == "3d" else factors[1:]
    lengths = [int(round(n * f)) for n, f in zip(window, window_factors)]
    coordinates = torch.from_numpy(output_coordinates(lengths, window_factors)).float()[None]
    scale = torch.tensor([window_factors], dtype=torch.float32)
    inputs = image[None, None] if mode == "3d" else image[:, None]
    with torch.no_grad():
        direct = network(torch.from_numpy(inputs), coordinates.expand(len(inputs), *coordinates.shape[1:]),
                         scale.expand(len(inputs), -1))[:, 0].numpy()
    np.testing.assert_allclose(engine, direct[0] if mode == "3d" else direct, atol=1e-5)


def test_whole_factor_pairs_keep_the_window_and_float_factors_crop_the_target():
    hr = ramp((12, 12))
    lr, target = degrade(hr, (2, 3), "block-mean")
    assert lr.shape == (6, 4) and target is hr
    lr, target = degrade(hr, (2.5, 1), "area")
    assert lr.shape == (4, 12) and target.shape == (10, 12)
    with pytest.raises(InputError, match="use 'area' for float factors"):
        check_degradation("block-mean", (2.5, 1), 12)


def test_block_mean_fourier_input_is_the_band_limited_block_mean_on_the_hr_grid():
    """A cosine even about the window's edges stays a whole cosine after the mirror padding; with a frequency whose
    period divides the padded LR length, the FFT is exact, so the input is the block mean's attenuation of the
    cosine, A = sin(π k f / N) / (f sin(π k / N)), at the HR voxel centres: phase, amplitude and padding at once."""
    size, factor = 32, 2
    lr_size = size // factor
    k = lr_size // np.gcd(lr_size, 2 * FOURIER_PADDING)
    x = np.arange(size)
    hr = np.broadcast_to(np.cos(2 * np.pi * k * (x + 0.5) / size)[:, None, None], (size, 8, 8)).astype(np.float32)
    network_input, target = degrade(hr, (factor, factor, factor), "block-mean-fourier")
    attenuation = np.sin(np.pi * k * factor / size) / (factor * np.sin(np.pi * k / size))
    assert network_input.shape == hr.shape and target is hr
    np.testing.assert_allclose(network_input, attenuation * hr, atol=2e-5)
    with pytest.raises(InputError, match="whole factors that divide"):
        check_degradation("block-mean-fourier", (2.5, 2, 2), 32)


def test_a_through_plane_scale_range_draws_one_thick_factor_per_batch_and_interpolates_each_input_back():
    volume = np.random.default_rng(0).random((24, 24, 24)).astype(np.float32)
    windows = WindowSampler([volume], 16, [0, 1, 2], 0.0, 0.0, NO_AUGMENTATION, seed=0)
    # Array factors (k, j, i): the thick axis is the first, whose window factor is the rows' (thick factor, 1).
    sampler = PairedSampler(windows, (2.5, 1.0), batch=2, degradation="area", noise=0.0, seed=3,
                            interpolate_input=True, scale_range=ScaleRange((1.5, 1.0, 1.0), (8.0, 1.0, 1.0)))
    drawn = [sampler.batch_factors(step) for step in range(20)]
    assert all(1.5 <= rows <= 8 and columns == 1 for rows, columns in drawn)
    assert len(set(drawn)) == 20 and drawn == [sampler.batch_factors(step) for step in range(20)]
    batch = sampler.batch(7)
    factors = drawn[7]
    for item in range(2):
        low, target = degrade(windows.draw(item_rng(3, 7, 0, item)), factors, "area")
        np.testing.assert_array_equal(batch["target"][item, 0].numpy(), target)
        np.testing.assert_array_equal(batch["input"][item, 0].numpy(), bspline_upsample(low, factors))
    assert batch["input"].shape == batch["target"].shape == (2, 1, round(int(16 / factors[0]) * factors[0]), 16)


def test_a_scale_range_is_refused_for_paired_models_that_upsample_by_a_fixed_factor():
    windows = WindowSampler([np.zeros((24, 24, 24), np.float32)], 16, None, 0.0, 0.0, NO_AUGMENTATION, seed=0)
    with pytest.raises(InputError, match="A scale_range with paired training needs a through-plane model"):
        PairedSampler(windows, (2.0, 2.0, 2.0), batch=2, degradation="area", noise=0.0, seed=0,
                      scale_range=ScaleRange((2.0, 2.0, 2.0), (3.0, 3.0, 3.0)))


def test_scale_range_moves_all_axes_together_unless_independent():
    tied = ScaleRange((1.0, 1.5, 1.5), (1.0, 4.0, 4.0))
    independent = ScaleRange((1.0, 1.5, 1.5), (1.0, 4.0, 4.0), independent=True)
    rng = np.random.default_rng(0)
    draws = [tied.draw(rng) for _ in range(50)]
    assert all(k == 1 and j == i and 1.5 <= j <= 4 for k, j, i in draws)
    assert any(j != i for _, j, i in (independent.draw(rng) for _ in range(5)))
    assert tied.spread(3) == [(1.0, 1.5, 1.5), (1.0, 2.75, 2.75), (1.0, 4.0, 4.0)]
    assert ScaleRange.from_config({"min": [1.5, 1.5, 1], "max": [4, 4, 1]}).to_document() == \
        {"min": [1.5, 1.5, 1.0], "max": [4.0, 4.0, 1.0]}
    with pytest.raises(InputError, match="is above its max"):
        ScaleRange.from_config({"min": 3, "max": 2})


def test_a_mixed_scale_range_draws_about_that_fraction_of_batches_axis_by_axis():
    mixed = ScaleRange.from_config({"min": [1, 1, 1], "max": [4, 4, 4], "independent": 0.5})
    rng = np.random.default_rng(0)
    draws = [mixed.draw(rng) for _ in range(400)]
    isotropic = sum(k == j == i for k, j, i in draws)
    assert 160 < isotropic < 240 and all(1 <= f <= 4 for draw in draws for f in draw)
    # A pure range spends no random number on the choice: it draws as before the option existed.
    tied = ScaleRange((1.0, 1.5, 1.5), (1.0, 4.0, 4.0))
    assert tied.draw(np.random.default_rng(7)) == (1.0, 1.5 + 2.5 * np.random.default_rng(7).random(),
                                                   1.5 + 2.5 * np.random.default_rng(7).random())
    with pytest.raises(InputError, match="a fraction of the batches in"):
        ScaleRange.from_config({"min": 1, "max": 4, "independent": 1.5})


def test_2d_windows_come_from_every_configured_plane():
    """Every voxel of this volume holds its own (k, j, i), so a slice tells which axis it was taken along."""
    k, j, i = np.meshgrid(*(np.arange(12),) * 3, indexing="ij")
    volume = (k * 10000 + j * 100 + i).astype(np.float32)
    windows = WindowSampler([volume], 8, [0, 1, 2], 0.0, 0.0, NO_AUGMENTATION, seed=0)
    planes = set()
    for item in range(40):
        window = windows.draw(np.random.default_rng(item))
        indices = np.stack([window // 10000, window // 100 % 100, window % 100])
        planes |= {axis for axis in range(3) if np.ptp(indices[axis]) == 0}
        assert window.shape == (8, 8)
    assert planes == {0, 1, 2}


def test_unpaired_domains_have_the_thick_axis_as_rows_in_x_only():
    volume = np.random.default_rng(0).random((40, 40, 40)).astype(np.float32)  # detail along every axis
    acquired, interpolated = simulate_thick_slices(volume, axis=2, factor=4, profile="box")
    assert acquired.shape == (10, 40, 40) and interpolated.shape == (40, 40, 40)  # thick axis first
    sampler = UnpairedThickSliceSampler(WindowSampler([interpolated], 32, [1, 2], 0.0, 0.0, {}, seed=0),
                                        WindowSampler([acquired], 32, [0], 0.0, 0.0, {}, seed=1), batch=8, seed=0)
    batch = sampler.batch(0)
    x, y = batch["x"][:, 0].numpy(), batch["y"][:, 0].numpy()

    def roughness(patches, axis):
        return np.abs(np.diff(patches, axis=axis)).mean()
    assert roughness(x, 1) < 0.5 * roughness(x, 2)  # rows (the thick axis) are smooth, columns are not
    assert 0.8 < roughness(y, 1) / roughness(y, 2) < 1.25


DATA_SET_SCANS = {"scans_per_volume": 3, "axes": [0, 1, 2], "factors": [3, 8], "profiles": ["box", "gaussian"],
                  "gap_fraction": [0, 0.2]}


def test_the_clade_data_set_draws_every_kind_of_thick_slice_scan_reproducibly():
    config = load_config(overrides=settings(recipe="unpaired-cycle", scale=[1, 1, 4], **{
        "data.thick_slices": DATA_SET_SCANS}))
    scans = draw_scans(config, 40)
    flat = [scan for volume in scans for scan in volume]
    assert [len(volume) for volume in scans] == [3] * 40
    assert {scan.axis for scan in flat} == {0, 1, 2} and {scan.profile for scan in flat} == {"box", "gaussian"}
    assert all(3 <= scan.factor <= 8 and 0 <= scan.gap <= 0.2 * scan.factor for scan in flat)
    assert any(scan.factor != round(scan.factor) for scan in flat)
    assert draw_scans(config, 40) == scans  # seeded
    single = draw_scans(load_config(overrides=settings(recipe="unpaired-cycle", scale=[1, 4, 1])), 2)
    assert single == [[ThickSliceScan(1, 4.0, "box", 0.0)]] * 2  # without data.thick_slices: the scale's axis


def test_clade_data_set_x_patches_come_from_through_plane_slices_and_y_from_acquired_ones(tmp_path):
    paths = []
    for seed in range(2):
        path = tmp_path / f"volume{seed}.nrrd"
        write_volume(Volume(np.random.default_rng(seed).random((48, 48, 48)).astype(np.float32), (1.0, 1.0, 1.0)),
                     path)
        paths.append(str(path))
    config = load_config(overrides=settings(recipe="unpaired-cycle", scale=[1, 1, 4], **{
        "data.train": paths, "data.hr_patch": 32, "data.batch": 16, "data.foreground_fraction": 0.0,
        "data.augment": {"flip": False, "intensity_scale": None, "gamma": None, "bias_field": 0.0, "noise": 0.0},
        "data.thick_slices": DATA_SET_SCANS}))
    sampler = UnpairedThickSliceSampler.from_config(config)
    assert len(sampler.low_resolution.volumes) == len(sampler.high_resolution.volumes) == 6
    for interpolated, acquired in zip(sampler.low_resolution.volumes, sampler.high_resolution.volumes):
        assert interpolated.shape[1:] == acquired.shape[1:] and acquired.shape[0] < interpolated.shape[0] / 2.5
    batch = sampler.batch(0)
    x, y = batch["x"][:, 0].numpy(), batch["y"][:, 0].numpy()
    roughness = [lambda patches, axis=axis: np.abs(np.diff(patches, axis=axis)).mean() for axis in (1, 2)]
    assert roughness[0](x) < 0.5 * roughness[1](x)  # X: rows along the thick axis of each scan
    assert 0.8 < roughness[0](y) / roughness[1](y) < 1.25  # Y: the acquired slices, detail both ways


def test_the_clade_data_set_refuses_held_out_volumes():
    config = load_config(overrides=settings(recipe="unpaired-cycle", scale=[1, 1, 4], **{
        "data.train": ["colin27"], "data.thick_slices": DATA_SET_SCANS}))
    with pytest.raises(InputError, match="held out"):
        UnpairedThickSliceSampler.from_config(config)


@pytest.mark.parametrize("spec", [{"scans_per_volume": 2}, [3, 8]])
def test_a_malformed_thick_slice_data_set_is_refused(spec):
    config = load_config(overrides=settings(recipe="unpaired-cycle", **{"data.thick_slices": spec}))
    with pytest.raises(InputError, match="data.thick_slices must be null or a mapping"):
        draw_scans(config, 1)


def settings(**values) -> list:
    return [f"{key}={json.dumps(value)}" for key, value in values.items()]


def test_a_config_gets_the_recipe_s_components_unless_it_names_others():
    config = load_config(overrides=settings(recipe="arbitrary-scale", scale_range={"min": 1.5, "max": 3}))
    assert (config["sampler"], config["validator"], config["exporter"], config["axes"]) == \
        ("arbitrary-scale", "arbitrary-scale", "checkpoint", "3d")
    config = load_config(overrides=settings(recipe="paired-2d", validator="arbitrary-scale"))
    assert config["validator"] == "arbitrary-scale" and config["axes"] == "2d-in-plane"


@pytest.mark.parametrize("values, message", [
    ({"recipe": "paired-4d"}, "Unknown recipe 'paired-4d'; choose one of arbitrary-scale, feature-pretraining"),
    ({"sampler": "nothing"}, "Unknown sampler 'nothing'"),
    ({"recipe": "paired-3d", "axes": "2d-in-plane"}, "trains 3d models, not axes '2d-in-plane'"),
    ({"slice_axis": 3}, "slice_axis must be an array axis"),
    ({"data.batch": 0}, "'data.batch' must be a positive whole number"),
    ({"validation.select": {"metric": "piqe"}}, "'validation.select' must be null or"),
    ({"validation.select": {"metric": "piqe", "lower_is_better": "yes", "min_psnr_gain": None}},
     "'validation.select' must be null or"),
])
def test_bad_component_choices_are_refused_when_the_config_is_read(values, message):
    with pytest.raises(InputError, match=message):
        load_config(overrides=settings(**values))


def test_a_2d_in_plane_model_may_not_scale_its_slice_axis():
    assert window_factors((1.0, 2.0, 3.0), "2d-in-plane", 0) == (2.0, 3.0)
    with pytest.raises(InputError, match="cannot scale its slice axis 1"):
        window_factors((1.0, 2.0, 3.0), "2d-in-plane", 1)


def test_a_name_is_registered_once():
    registry = Registry("sampler")
    registry.register("mine")(object)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("mine")(object)
