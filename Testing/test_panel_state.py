"""The Slicer panel's states without Qt: VolumeNodeJob with the real background process against a real MRML scene
(PyPI's slicer-core), stopped at every stage, and the panel's rules (scale, memory, devices, method choices)."""
import json
import os
import re
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from MedSRLib.apps.panel import (MethodChoice, OptionField, ScaleSuggestion, estimate_request, find_choice,
    format_stored_scale, memory_advice, method_choices, method_run_options, option_fields, parse_stored_options,
    parse_stored_scale, run_options, run_scale, scale_or_target_spacing, store_option, suggest_scale,
    target_spacing_note, unavailable_backends, unavailable_devices, update_scale)
from MedSRLib.apps.compare import (difference_to_bspline, extent_in_slice_plane, symmetric_window,
                                   zoomed_field_of_view)
from MedSRLib.errors import InputError
from MedSRLib.io.volume import Volume
from MedSRLib.apps.process import CANCELLED_MESSAGE, JobState

slicer = pytest.importorskip("slicer", reason="needs PyPI's slicer-core (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package is not slicer-core (pip install slicer-core)", allow_module_level=True)

from MedSRLib.apps.mrml import INPUT_REMOVED_MESSAGE, SCENE_CLOSED_MESSAGE, VolumeNodeJob  # noqa: E402

MODULE_FILE = Path(__file__).resolve().parents[1] / "MedSR" / "MedSR.py"
# Methods the background process registers through MEDSR_EXTRA_METHODS: one waits to be stopped (so a test can act
# while the child is surely running), one fails after its first progress step; for many-volume runs
# (Testing/test_many_volumes.py), two that interpolate linearly except on slices over 2 mm thick, where one fails after
# its first progress step and the other waits there.
TEST_METHODS = textwrap.dedent('''
    import time
    from MedSRLib.errors import MedSRError
    from MedSRLib.methods.base import Method, register
    from MedSRLib.methods.spline_interpolation import LinearInterpolation
    from MedSRLib.progress import report

    @register
    class WaitsToBeStopped(Method):
        name = "test-wait"

        def run(self, image, scale_xyz, spacing, settings):
            report(0, 10, settings.progress)
            time.sleep(600)

    @register
    class FailsMidway(Method):
        name = "test-fail"

        def run(self, image, scale_xyz, spacing, settings):
            report(1, 2, settings.progress)
            raise MedSRError("The test method failed midway.")

    @register
    class FailsOnThickSlices(LinearInterpolation):
        name = "test-fail-thick"

        def run(self, image, scale_xyz, spacing, settings):
            report(1, 10, settings.progress)
            if spacing[2] > 2:
                self.stop()
            return super().run(image, scale_xyz, spacing, settings)

        def stop(self):
            raise MedSRError("The test method failed midway.")

    @register
    class WaitsOnThickSlices(FailsOnThickSlices):
        name = "test-wait-thick"

        def stop(self):
            time.sleep(600)
''')


@pytest.fixture
def scene():
    scene = slicer.vtkMRMLScene()
    slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)  # as in Slicer, where it always exists
    return scene


@pytest.fixture
def input_node(scene):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "thick")
    node.SetSpacing(1.0, 1.0, 3.0)
    node.SetOrigin(10.0, -20.0, 5.0)
    slicer.util.updateVolumeFromArray(node, np.arange(6 * 8 * 10, dtype=np.float32).reshape(6, 8, 10))
    node.CreateDefaultDisplayNodes()
    return node


@pytest.fixture
def job_folders(tmp_path, monkeypatch):
    """Where the jobs' temporary folders go (checked empty after each job); the test methods registered."""
    methods = tmp_path / "test_methods.py"
    methods.write_text(TEST_METHODS)
    monkeypatch.setenv("MEDSR_EXTRA_METHODS", str(methods))
    folders = tmp_path / "jobs"
    folders.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folders))
    return folders


def node_ids(scene):
    return sorted(scene.GetNthNode(n).GetID() for n in range(scene.GetNumberOfNodes()))


def make_job(node, method="bspline", **options):
    """A job that moves one k-slice per poll, so every stage lasts several polls."""
    slice_bytes = 8 * 10 * 4
    return VolumeNodeJob(node, method, (1, 1, 3), {"device": "cpu"}, step_bytes=slice_bytes, **options)


def poll_while(job, condition, timeout_s=60.0):
    deadline = time.monotonic() + timeout_s
    while job.active and condition(job):
        assert time.monotonic() < deadline, f"stuck in {job.state} ({job.stage})"
        if job.poll() == JobState.RUNNING:
            time.sleep(0.01)


def assert_child_gone(job):
    if job.child_pid is not None:
        with pytest.raises(ProcessLookupError):
            os.kill(job.child_pid, 0)


def scene_observed(scene):
    return scene.HasObserver(scene.StartCloseEvent), scene.HasObserver(scene.NodeRemovedEvent)


def assert_ended_cleanly(job, scene, nodes_before, folders, state, message):
    assert (job.state, job.message) == (state, message)
    assert set(node_ids(scene)) <= set(nodes_before)   # no output node, not even half of one
    assert job.resultNodes == {}
    assert_child_gone(job)
    assert list(folders.iterdir()) == []               # the job folder is gone


# --- VolumeNodeJob ----------------------------------------------------------------------------------------------------

def test_success_adds_the_result_and_the_bspline_comparison(scene, input_node, job_folders):
    job = make_job(input_node, "linear", compare_bspline=True)
    job.start()
    states = []
    poll_while(job, lambda job: states.append(job.state) or True)
    assert job.state == JobState.DONE, job.message
    assert [state for n, state in enumerate(states) if n == 0 or states[n - 1] != state] == [
        JobState.PREPARING, JobState.RUNNING, JobState.IMPORTING]
    result, comparison = job.resultNodes["result"], job.resultNodes["comparison"]
    assert job.message == "Done: thick linear x1x1x3"
    assert (result.GetName(), comparison.GetName()) == ("thick linear x1x1x3", "thick bspline x1x1x3")
    assert result.GetAttribute("MedSR.method") == "linear" and comparison.GetAttribute("MedSR.method") == "bspline"
    assert result.GetAttribute("MedSR.scale") == "1,1,3"
    for node in (result, comparison):
        assert node.GetScene() is scene
        assert node.GetSpacing() == pytest.approx((1.0, 1.0, 1.0))
        assert node.GetOrigin() == pytest.approx((10.0, -20.0, 4.0))  # corner aligned: one output voxel back along k
        assert slicer.util.arrayFromVolume(node).shape == (18, 8, 10)
    # Output slice 3m + 1 sits on input slice m.
    np.testing.assert_allclose(slicer.util.arrayFromVolume(comparison)[1::3], slicer.util.arrayFromVolume(input_node),
                               atol=1e-3)
    assert_child_gone(job)
    assert list(job_folders.iterdir()) == []


def test_failure_midway_is_one_sentence_and_adds_nothing(scene, input_node, job_folders):
    before, observed = node_ids(scene), scene_observed(scene)
    job = make_job(input_node, "test-fail")
    job.start()
    poll_while(job, lambda job: True)
    assert job.progress == (1, 2)  # it failed after its first step
    assert_ended_cleanly(job, scene, before, job_folders, JobState.FAILED, "The test method failed midway.")
    assert node_ids(scene) == before and scene_observed(scene) == observed  # the job stopped watching the scene


def test_results_are_added_all_or_none(scene, input_node, job_folders, monkeypatch):
    """The comparison cannot be added after the result was: the result goes again, with its display node."""
    from MedSRLib.apps import mrml
    add = mrml.addVolumeNodeLike

    def fail_for_the_comparison(volume, reference, name, attributes):
        if attributes["method"] == "bspline":
            raise RuntimeError("no room for the comparison")
        return add(volume, reference, name, attributes)
    monkeypatch.setattr(mrml, "addVolumeNodeLike", fail_for_the_comparison)
    before = node_ids(scene)
    job = make_job(input_node, "linear", compare_bspline=True)
    job.start()
    poll_while(job, lambda job: True)
    assert_ended_cleanly(job, scene, before, job_folders, JobState.FAILED,
                         "The processing failed unexpectedly (RuntimeError: no room for the comparison).")
    assert node_ids(scene) == before


def test_bad_input_fails_at_start(scene, job_folders):
    labels = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    slicer.util.updateVolumeFromArray(labels, np.zeros((2, 3, 4), dtype=np.uint8))
    before = node_ids(scene)
    job = make_job(labels)
    assert job.start() == JobState.FAILED
    assert "label map" in job.message and job.child_pid is None
    assert node_ids(scene) == before and list(job_folders.iterdir()) == []


@pytest.mark.parametrize("method, stage, ready", [
    ("bspline", JobState.PREPARING, lambda job: job.progress[0] >= 2),     # input partly written, no child yet
    ("test-wait", JobState.RUNNING, lambda job: job.progress == (0, 10)),  # the child is computing
    ("bspline", JobState.IMPORTING, lambda job: job.progress[0] >= 2),     # result partly read back
], ids=["preparing", "running", "importing"])
@pytest.mark.parametrize("stop, message", [
    (lambda job, scene, node: job.cancel(), CANCELLED_MESSAGE),
    (lambda job, scene, node: scene.RemoveNode(node), INPUT_REMOVED_MESSAGE),
    (lambda job, scene, node: scene.Clear(0), SCENE_CLOSED_MESSAGE),
], ids=["cancel", "input-removed", "scene-cleared"])
def test_stopping_at_every_stage_leaves_the_scene_as_it_was(scene, input_node, job_folders, method, stage, ready,
                                                            stop, message):
    before, observed = node_ids(scene), scene_observed(scene)
    job = make_job(input_node, method)
    job.start()
    poll_while(job, lambda job: not (job.state == stage and ready(job)))
    assert job.state == stage, job.message
    if stage == JobState.RUNNING:
        os.kill(job.child_pid, 0)  # alive
    stop(job, scene, input_node)
    assert job.state == JobState.CANCELLED  # at once, from the scene's event: no poll needed
    assert job.poll() == JobState.CANCELLED
    assert_ended_cleanly(job, scene, before, job_folders, JobState.CANCELLED, message)
    if message == CANCELLED_MESSAGE:
        assert node_ids(scene) == before
    assert scene_observed(scene) == observed


# --- the panel's rules ------------------------------------------------------------------------------------------------

MODEL = MethodChoice("net-x2", "net-x2 (net)", "net", "net-x2", "A ×2 model.", (2.0, 2.0, 2.0), True)
THICK = (1.0, 1.0, 3.0)


class PanelScale:
    """The parameter node's scale fields as MedSRWidget.updateScale drives them."""

    def __init__(self):
        self.scale, self.suggested = (2.0, 2.0, 2.0), ""
        self.choice, self.spacing = find_choice(method_choices(), "bspline"), None

    def changed(self, choice=None, spacing=None):
        self.choice, self.spacing = choice or self.choice, spacing or self.spacing
        update = update_scale(self.scale, parse_stored_scale(self.suggested), suggest_scale(self.choice, self.spacing))
        self.scale, self.suggested = update.scale, format_stored_scale(update.suggested)
        return update


def test_a_models_scale_wins_over_the_thick_axis_guess_in_either_click_order():
    input_first, model_first = PanelScale(), PanelScale()
    assert input_first.changed(spacing=THICK).scale == (1.0, 1.0, 3.0)
    assert input_first.changed(choice=MODEL).scale == (2.0, 2.0, 2.0)
    model_first.changed(choice=MODEL)
    assert model_first.changed(spacing=THICK).scale == (2.0, 2.0, 2.0)
    # Back to an interpolation method: the guess applies again.
    assert model_first.changed(choice=find_choice(method_choices(), "lanczos")).scale == (1.0, 1.0, 3.0)


def test_the_users_scale_is_kept():
    panel = PanelScale()
    panel.changed(spacing=THICK)
    panel.scale = (1.0, 1.0, 4.0)  # typed by the user
    update = panel.changed(choice=MODEL)
    assert update.scale == (1.0, 1.0, 4.0)
    assert update.note == "net-x2 is trained for ×2×2×2. Suggested ×2×2×2; your scale is kept."
    assert panel.changed(spacing=(0.5, 0.5, 2.0)).scale == (1.0, 1.0, 4.0)
    panel.scale = (1.0, 1.0, 3.0)  # back to the panel's last suggestion: suggestions apply again
    assert panel.changed(choice=find_choice(method_choices(), "bspline")).scale == (1.0, 1.0, 4.0)


def test_suggestions_are_rounded_like_the_spin_boxes():
    suggestion = suggest_scale(None, (0.9, 0.9, 1.2))
    assert suggestion == ScaleSuggestion((1.0, 1.0, 1.33), "Thick axis: K, factor 1.3333 (from spacing).")
    # The spin box shows 1.33, so the panel still counts the scale as its own suggestion.
    assert update_scale((1.0, 1.0, 1.33), (1.0, 1.0, 1.33), suggest_scale(None, (1, 1, 1))).scale == (2.0, 2.0, 2.0)
    assert suggest_scale(None, None).reason == "No input yet."
    assert suggest_scale(None, (1, 1, 1.1)).scale == (2.0, 2.0, 2.0)


def test_method_choices_and_run_options():
    from MedSRLib.methods import list_methods
    from MedSRLib.models.catalog import list_models
    choices = method_choices()
    assert [choice.key for choice in choices] == [info["name"] for info in list_methods()] + [
        model.name for model in list_models()]
    for model in list_models():
        choice = find_choice(choices, model.name)
        assert (choice.method, choice.checkpoint, choice.scale) == (model.method, model.name, model.scales.default())
    assert not find_choice(choices, "bspline").learned and find_choice(choices, "nope") is None
    assert run_options(0, 0, "gaussian", 4, "auto", "auto") == {"blend": "gaussian", "batch_size": 4, "device": "auto",
                                                               "backend": "auto"}
    options = run_options(32, 24, "average", 2, "cpu", "openvino")
    assert options["backend"] == "openvino"
    assert (options["patch"], options["stride"]) == (32, 24)
    assert estimate_request(MODEL, (6, 8, 10), (2.0, 2.0, 2.0), options) == {
        "method": "net", "checkpoint": "net-x2", "shape": [6, 8, 10], "scale": [2.0, 2.0, 2.0],
        "patch": 32, "stride": 24, "batch_size": 2, "device": "cpu"}


def test_the_method_options_fields_come_from_the_methods_declarations():
    from MedSRLib.methods import get_method
    fields = {field.name: field for field in option_fields("smore")}
    assert list(fields) == list(get_method("smore").option_names)
    assert fields["profile"] == OptionField(
        "profile", "choice", "Slice profile", "The shape of the through-plane slice profile the training pairs are "
        "degraded with; its width (FWHM) is estimated from the scan unless a slice gap is given.", "gaussian",
        choices=("box", "gaussian"))
    # No default gap (SMORE estimates it): shown as the method's, one step below the minimum.
    assert (fields["gap"].label, fields["gap"].value, fields["gap"].minimum, fields["gap"].decimals,
            fields["gap"].default_text) == ("Slice gap (mm)", -1.0, -1.0, 2, "the method's")
    # No default of its own: one step below the minimum, shown as the method's.
    assert (fields["iterations"].value, fields["iterations"].minimum, fields["iterations"].default_text) == (
        0, 0, "the method's")
    assert (fields["budget_seconds"].label, fields["budget_seconds"].kind) == ("Time budget (s)", "float")
    assert fields["both_orientations"].value is True
    assert {field.name: field.value for field in option_fields("clade")}["both_orientations"] is False
    assert option_fields("bspline") == []


def test_only_the_options_set_away_from_the_methods_default_are_run():
    stored = {}
    for name, value in [("iterations", 0), ("seed", 3), ("profile", "gaussian"), ("both_orientations", True),
                        ("features", 8), ("gap", 0.0)]:
        stored = parse_stored_options(store_option(json.dumps(stored), name, value))
    # features is clade's: kept for it, not given to smore; a gap of 0 is a value (smore estimates the gap by default),
    # the rest equal smore's defaults.
    assert method_run_options("smore", stored) == {"seed": 3, "gap": 0.0}
    assert method_run_options("clade", stored) == {"seed": 3, "features": 8, "both_orientations": True}
    assert method_run_options("bspline", stored) == {}
    # What a field cannot show (a choice no longer offered, a number out of range) is the default, as shown.
    assert method_run_options("smore", {"profile": "triangle", "seed": -1, "gap": "wide"}) == {}
    with pytest.raises(InputError, match=r"^The option 'Time budget \(s\)' must be a number of at least 1, not 0.5.$"):
        method_run_options("smore", {"budget_seconds": 0.5})
    assert parse_stored_options("not json") == parse_stored_options("[1]") == parse_stored_options("") == {}


def test_an_option_declared_once_appears_in_the_command_line_and_the_panel(monkeypatch):
    import argparse
    from MedSRLib.apps.cli import build_parser
    from MedSRLib.methods import base
    from MedSRLib.methods.options import MethodOption

    class Sharpened(base.Method):
        name = "test-sharpened"
        options = (MethodOption("sharpness", "float", "how much to sharpen", default=0.5, minimum=0, maximum=1),)
    monkeypatch.setitem(base._REGISTRY, Sharpened.name, Sharpened())

    commands = next(action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction))
    flag = next(action for action in commands.choices["super-resolve"]._actions if action.dest == "sharpness")
    assert flag.option_strings == ["--sharpness"]
    assert flag.help == "how much to sharpen (test-sharpened; default: 0.5)"
    assert option_fields("test-sharpened") == [OptionField("sharpness", "float", "Sharpness", "How much to sharpen.",
                                                           0.5, 0.0, 1.0, 2)]
    assert method_run_options("test-sharpened", {"sharpness": 0.8}) == {"sharpness": 0.8}


def probe_report(device, needs, tiled=True, cuda_free=None, openvino=False):
    gib = 2 ** 30
    return {"devices": {"cpu": {"available": True, "free_bytes": 16 * gib, "detail": "the computer's memory"},
                        "cuda": {"available": cuda_free is not None, "free_bytes": cuda_free,
                                 "detail": "not present on this computer"},
                        "mps": {"available": False, "free_bytes": None, "detail": "PyTorch is not installed"}},
            "backends": {"auto": {"available": True, "detail": "OpenVINO where it pays off, else torch"},
                         "torch": {"available": True, "detail": "PyTorch, eagerly"},
                         "openvino": {"available": openvino, "detail": "OpenVINO on the CPU" if openvino else
                                      "not installed"}},
            "estimate": {"device": device, "needs": {pool: size * gib for pool, size in needs.items()},
                         "tiled": tiled},
            "estimate_error": None}


def test_memory_warning_names_the_fix():
    gib = 2 ** 30
    text, warning = memory_advice(probe_report("cuda", {"cpu": 1, "cuda": 9.5}, cuda_free=6 * gib))
    assert warning
    assert text == ("Needs about 1.0 GiB of the computer's memory (16.0 GiB free) and about 9.5 GiB of the cuda GPU "
                    "(6.0 GiB free), running on cuda. That is more than the cuda GPU has free: choose a smaller patch "
                    "size or batch, run on the CPU or crop the volume to the region of interest with the Crop Volume "
                    "module first.")
    text, warning = memory_advice(probe_report("cpu", {"cpu": 20}, tiled=False))
    assert warning and "choose a lower scale or crop the volume" in text and "CPU" not in text
    assert memory_advice(probe_report("cpu", {"cpu": 2})) == (
        "Needs about 2.0 GiB of the computer's memory (16.0 GiB free), running on cpu.", False)
    failed = dict(probe_report("cpu", {}), estimate=None, estimate_error="No trained model for 'x'.")
    assert memory_advice(failed) == ("No estimate: No trained model for 'x'.", False)
    assert unavailable_devices(failed) == {"cuda": "not present on this computer", "mps": "PyTorch is not installed"}


def test_the_slicer_module_never_imports_torch():
    """Devices are probed in the background process; torch in Slicer's process would also pin its memory there."""
    source = MODULE_FILE.read_text(encoding="utf-8")
    assert not re.search(r"^\s*(import|from)\s+torch\b|import_module\(\s*['\"]torch|find_spec\(\s*['\"]torch",
                         source, re.MULTILINE)


def test_openvino_is_offered_only_where_the_background_process_can_import_it():
    assert unavailable_backends(None) == {"openvino": "not probed yet"}  # hidden until the first probe answers
    assert unavailable_backends(probe_report("cpu", {"cpu": 1})) == {"openvino": "not installed"}
    assert unavailable_backends(probe_report("cpu", {"cpu": 1}, openvino=True)) == {}


def test_the_slicer_modules_backend_choices_are_the_engines():
    """MedSR.py spells them out (it loads before MedSRLib's requirements may be installed); they must not drift."""
    import ast
    from MedSRLib.engine.backends import BACKENDS
    assignment = next(node for node in ast.parse(MODULE_FILE.read_text(encoding="utf-8")).body
                      if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "BACKENDS")
    assert ast.literal_eval(assignment.value) == BACKENDS


CLINICAL = (0.8, 0.8, 7.2)


def test_a_target_spacing_replaces_the_scale():
    assert scale_or_target_spacing((1.0, 1.0, 3.004), 0.0) == ((1.0, 1.0, 3.0), {})  # 0: unset, the scale fields
    assert scale_or_target_spacing((1.0, 1.0, 3.0), 1.2) == (None, {"target_spacing": 1.2})
    assert run_scale((2.0, 2.0, 2.0), 1.2, CLINICAL) == (1.0, 1.0, 6.0)  # for the memory estimate
    assert run_scale((2.0, 2.0, 2.0), 0.0, CLINICAL) == (2.0, 2.0, 2.0)
    assert target_spacing_note(1.2, CLINICAL) == "Target spacing 1.2 mm replaces the scale: ×1×1×6 for this input."
    assert target_spacing_note(1.2, None) == "Target spacing 1.2 mm replaces the scale; choose an input volume."
    assert target_spacing_note(8.0, CLINICAL) == ("Every axis of this volume (spacing 0.8×0.8×7.2 mm) is already at "
                                                  "or finer than the target spacing 8 mm.")
    with pytest.raises(InputError, match="already at or finer"):
        run_scale((2.0, 2.0, 2.0), 8.0, CLINICAL)


@pytest.mark.parametrize("target_spacing", [0.0, 1.0])
def test_the_job_gets_the_target_spacing_or_the_scale_never_both_and_the_backend(scene, input_node, job_folders,
                                                                               target_spacing):
    """As the Super-resolve button composes a run: the scale fields say ×1×1×2, the target spacing 1 mm (×1×1×3 for
    the 1×1×3 mm input) replaces them when set; the backend goes along and both end in the result's provenance."""
    scale, scale_options = scale_or_target_spacing((1.0, 1.0, 2.0), target_spacing)
    options = {**run_options(0, 0, "gaussian", 4, "cpu", "torch"), **scale_options}
    job = VolumeNodeJob(input_node, "linear", scale, options)
    if target_spacing:
        assert job.request["scale"] is None and job.request["options"]["target_spacing"] == 1.0
    else:
        assert job.request["scale"] == [1.0, 1.0, 2.0] and "target_spacing" not in job.request["options"]
    assert job.request["options"]["backend"] == "torch"
    job.start()
    poll_while(job, lambda job: True)
    assert job.state == JobState.DONE, job.message
    result = job.resultNodes["result"]
    expected_scale = "1,1,3" if target_spacing else "1,1,2"
    assert result.GetName() == f"thick linear x{expected_scale.replace(',', 'x')}"
    assert result.GetAttribute("MedSR.scale") == expected_scale
    assert result.GetAttribute("MedSR.targetSpacing") == ("1" if target_spacing else "")
    assert result.GetAttribute("MedSR.backend") == "torch"
    assert result.GetSpacing() == pytest.approx((1.0, 1.0, 1.0 if target_spacing else 1.5))


AXIAL_SLICE_TO_RAS = np.array([[-1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])      # Slicer's Red view
SAGITTAL_SLICE_TO_RAS = np.array([[0, 0, 1.0, 0], [-1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]])    # Yellow
CORONAL_SLICE_TO_RAS = np.array([[-1.0, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])     # Green


def test_a_volumes_extent_in_each_slice_plane():
    """10 × 20 × 5 voxels of 1 × 2 × 3 mm span 10 mm (R), 40 mm (A) and 15 mm (S) from voxel edge to edge."""
    ijk_to_ras = np.diag([1.0, 2.0, 3.0, 1.0])
    ijk_to_ras[:3, 3] = (5.0, -7.0, 2.0)  # the origin moves the box, not its extent
    assert extent_in_slice_plane(ijk_to_ras, (10, 20, 5), AXIAL_SLICE_TO_RAS) == pytest.approx((10.0, 40.0))
    assert extent_in_slice_plane(ijk_to_ras, (10, 20, 5), SAGITTAL_SLICE_TO_RAS) == pytest.approx((40.0, 15.0))
    assert extent_in_slice_plane(ijk_to_ras, (10, 20, 5), CORONAL_SLICE_TO_RAS) == pytest.approx((10.0, 15.0))
    # A 10 × 10 mm square turned 45° in the axial plane spans its diagonal, 10·√2 mm, along R and A.
    turned = np.eye(4)
    turned[:2, :2] = np.array([[1.0, -1.0], [1.0, 1.0]]) / np.sqrt(2)
    assert extent_in_slice_plane(turned, (10, 10, 1), AXIAL_SLICE_TO_RAS) == pytest.approx((14.1421356, 14.1421356))


def test_the_zoomed_field_of_view_keeps_pixels_square():
    # A tall 10 × 40 mm extent in a 200 × 100 px view: the height fills it (40 mm), the width follows (80 mm).
    assert zoomed_field_of_view((10.0, 40.0), (200, 100), 1.0) == pytest.approx((80.0, 40.0))
    assert zoomed_field_of_view((10.0, 40.0), (200, 100), 2.0) == pytest.approx((40.0, 20.0))
    # A wide 100 × 20 mm extent in the same view: the width fills it (100 mm), the height follows (50 mm); ×4.
    assert zoomed_field_of_view((100.0, 20.0), (200, 100), 4.0) == pytest.approx((25.0, 12.5))
    # Exactly the view's shape: both fill it.
    assert zoomed_field_of_view((60.0, 30.0), (200, 100), 1.5) == pytest.approx((40.0, 20.0))
    with pytest.raises(InputError, match="above 0"):
        zoomed_field_of_view((60.0, 30.0), (200, 100), 0.0)


def test_the_difference_to_bspline_and_its_window():
    grid = {"spacing": (1.0, 1.0, 1.5), "origin": (4.0, 5.0, 6.0), "direction": (0, 1, 0, 1, 0, 0, 0, 0, 1)}
    bspline = Volume(np.zeros((2, 3, 50), dtype=np.int16), **grid)
    result = Volume(np.arange(300, dtype=np.int16).reshape(2, 3, 50) - 100, **grid, metadata={"method": "smore"})
    difference = difference_to_bspline(result, bspline)
    assert difference.array.dtype == np.float32 and np.array_equal(difference.array, result.array)
    assert (difference.spacing, difference.origin, difference.direction) == (result.spacing, result.origin,
                                                                             result.direction)
    # |−100 … 199|: 99th percentile of the 300 magnitudes.
    assert difference.metadata == {"method": "smore", "difference_to": "bspline",
                                   "display_half_width": pytest.approx(np.percentile(np.abs(result.array), 99))}
    assert result.metadata == {"method": "smore"}  # the result's own metadata are untouched
    assert difference_to_bspline(bspline, bspline).metadata["display_half_width"] == 1.0  # identical: any window
    assert symmetric_window(2.5) == (5.0, 0.0)
    with pytest.raises(InputError, match="shape"):
        difference_to_bspline(result, Volume(np.zeros((2, 3, 49)), **grid))
