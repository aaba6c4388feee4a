"""superResolveVolumeNode against a real MRML scene from PyPI's slicer-core (pip install slicer-core), and the Slicer
module's self-test with stand-ins for what slicer-core lacks (Qt, the scripted-module classes, SampleData)."""
import functools
import importlib.util
import os
import shutil
import sys
import types
import typing
import unittest
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs PyPI's slicer-core (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package is not slicer-core (pip install slicer-core)", allow_module_level=True)
import vtk  # noqa: E402  (installed with slicer-core)

from MedSRLib import Cancelled, InputError, MedSRError, Volume, __version__  # noqa: E402
from MedSRLib.apps.mrml import (DIFFERENCE_COLOR_NODE_IDS, VolumeNodeJob, addMetricsTableNode,  # noqa: E402
                                addVolumeNodeLike, superResolveVolumeNode, volumeFromNode)
from MedSRLib.apps.process import COMPARISON, DIFFERENCE, RESULT, JobState  # noqa: E402

# IJK→RAS directions (columns): i → (0.8, 0, −0.6), j → (0, 1, 0), k → (0.6, 0, 0.8); a rotation about the A axis.
OBLIQUE_RAS = np.array([[0.8, 0.0, 0.6],
                        [0.0, 1.0, 0.0],
                        [-0.6, 0.0, 0.8]])


def make_input_node(scene, shape_kji=(4, 5, 6), spacing=(1.0, 1.0, 3.0), origin=(10.0, -20.0, 5.0),
                    directions=OBLIQUE_RAS, name="input"):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    node.SetSpacing(spacing)
    node.SetOrigin(origin)
    node.SetIJKToRASDirections(directions)
    array = np.arange(np.prod(shape_kji), dtype=np.float32).reshape(shape_kji)
    slicer.util.updateVolumeFromArray(node, array)
    node.CreateDefaultDisplayNodes()
    return node


def ijk_to_ras(node):
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def directions_of(node):
    directions = np.zeros((3, 3))
    node.GetIJKToRASDirections(directions)
    return directions


def node_ids(scene):
    return sorted(scene.GetNthNode(n).GetID() for n in range(scene.GetNumberOfNodes()))


def volume_node_count(scene):
    return scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")


@pytest.fixture
def scene():
    return slicer.vtkMRMLScene()


def test_node_becomes_lps_volume_with_kji_array(scene):
    node = make_input_node(scene)
    volume = volumeFromNode(node)
    assert volume.array.shape == (4, 5, 6)
    assert volume.array[1, 2, 3] == 1 * 30 + 2 * 6 + 3
    assert volume.spacing == (1.0, 1.0, 3.0)
    # LPS = RAS with the first two axes negated, for the origin and for every direction column.
    assert volume.origin == pytest.approx((-10.0, 20.0, 5.0))
    assert volume.direction_matrix == pytest.approx(np.array([[-0.8, 0.0, -0.6], [0.0, -1.0, 0.0], [-0.6, 0.0, 0.8]]))
    volume.array[:] = 0  # a copy: the node keeps its voxels
    assert slicer.util.arrayFromVolume(node)[1, 2, 3] == 45


def test_acceptance_oblique_thick_slices_bspline_x113(scene):
    node = make_input_node(scene)
    result = superResolveVolumeNode(node, "bspline", (1, 1, 3))

    assert result.GetClassName() == "vtkMRMLScalarVolumeNode"
    assert result.GetScene() is scene
    assert result.GetSpacing() == pytest.approx((1.0, 1.0, 1.0))
    assert directions_of(result) == pytest.approx(OBLIQUE_RAS)
    # Corner aligned: o' = o + D·((s' − s)/2) = (10, −20, 5) + (−1)·(0.6, 0, 0.8) along k.
    assert result.GetOrigin() == pytest.approx((9.4, -20.0, 4.2))
    assert slicer.util.arrayFromVolume(result).shape == (12, 5, 6)
    # Output slice 3m + 1 lies on input slice m, where the interpolating B-spline takes the input's values.
    np.testing.assert_allclose(slicer.util.arrayFromVolume(result)[1::3], slicer.util.arrayFromVolume(node), atol=1e-3)
    # The outer corner of the first voxel did not move: IJK (−½, −½, −½) maps to the same RAS point.
    corner = np.array([-0.5, -0.5, -0.5, 1.0])
    assert (ijk_to_ras(result) @ corner) == pytest.approx(ijk_to_ras(node) @ corner)


def test_non_cubic_volume_keeps_array_axes(scene):
    node = make_input_node(scene, shape_kji=(3, 4, 7), spacing=(0.5, 2.0, 4.0), origin=(1.0, 2.0, 3.0),
                           directions=np.eye(3))
    result = superResolveVolumeNode(node, "nearest", (1, 2, 4))
    output = slicer.util.arrayFromVolume(result)
    assert output.shape == (12, 8, 7)
    # Nearest neighbour on the corner-aligned grid: output voxel (4k+1, 2j, i) samples input (k, j, i); the
    # intensity normalisation round trip costs float32 rounding only.
    source = slicer.util.arrayFromVolume(node)
    assert np.allclose(output[1::4, ::2, :], source, atol=1e-4)
    assert result.GetSpacing() == pytest.approx((0.5, 1.0, 1.0))
    # Identity directions: o' = (1, 2, 3) + ((0.5−0.5)/2, (1−2)/2, (1−4)/2).
    assert result.GetOrigin() == pytest.approx((1.0, 1.5, 1.5))


def test_parent_transform_window_level_and_study_are_kept(scene):
    node = make_input_node(scene)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "moved")
    node.SetAndObserveTransformNodeID(transform.GetID())
    display = node.GetDisplayNode()
    display.SetAutoWindowLevel(False)
    display.SetWindowLevel(200.0, 50.0)
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "patient")
    study = hierarchy.CreateStudyItem(patient, "study")
    hierarchy.CreateItem(study, node)

    result = superResolveVolumeNode(node, "linear", 2)

    assert result.GetTransformNodeID() == transform.GetID()
    assert result.GetDisplayNode().GetAutoWindowLevel() == 0
    assert result.GetDisplayNode().GetWindow() == pytest.approx(200.0)
    assert result.GetDisplayNode().GetLevel() == pytest.approx(50.0)
    assert result.GetDisplayNode().GetColorNodeID() == display.GetColorNodeID()
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(result)) == study


def test_provenance_attributes_and_name(scene):
    node = make_input_node(scene, name="T2 axial")
    result = superResolveVolumeNode(node, "bspline", "1,1,3")
    assert result.GetName() == "T2 axial bspline x1x1x3"
    assert result.GetAttribute("MedSR.method") == "bspline"
    assert result.GetAttribute("MedSR.scale") == "1,1,3"
    assert result.GetAttribute("MedSR.version") == __version__
    assert result.GetAttribute("MedSR.checkpointSHA256") == ""
    assert result.GetAttribute("MedSR.targetSpacing") == "" and result.GetAttribute("MedSR.backend") == "auto"
    by_spacing = superResolveVolumeNode(node, "bspline", None, target_spacing=1.5)
    assert by_spacing.GetAttribute("MedSR.targetSpacing") == "1.5" and by_spacing.GetAttribute("MedSR.scale") == "1,1,2"
    assert superResolveVolumeNode(node, "bspline", "1,1,3").GetName() == "T2 axial bspline x1x1x3_1"


def test_cancel_midway_leaves_scene_unchanged(scene):
    node = make_input_node(scene)
    before = node_ids(scene)
    calls = []
    with pytest.raises(Cancelled):
        superResolveVolumeNode(node, "bspline", (1, 1, 3), progress=lambda done, total: calls.append(done),
                               cancel=lambda: True)
    assert calls == [0]
    assert node_ids(scene) == before


def test_cancel_of_the_background_process_raises_cancelled_and_adds_no_node(scene):
    from MedSRLib.apps.process import super_resolve_in_subprocess
    node = make_input_node(scene)
    before, volumes = node_ids(scene), volume_node_count(scene)
    in_background = functools.partial(super_resolve_in_subprocess, python=sys.executable)
    with pytest.raises(Cancelled):
        superResolveVolumeNode(node, "bspline", (1, 1, 3), cancel=lambda: True, superResolve=in_background)
    assert node_ids(scene) == before and volume_node_count(scene) == volumes


def test_failure_while_adding_the_node_removes_it_again(scene):
    node = make_input_node(scene)
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    before = node_ids(scene)
    items_before = hierarchy.GetNumberOfItems()
    # VTK volumes cannot hold 64-bit integers, so filling the new node fails after it was added to the scene.
    unstorable = Volume(np.ones((2, 3, 4), dtype=np.int64), (1.0, 1.0, 1.0))
    with pytest.raises(RuntimeError, match="long long"):
        superResolveVolumeNode(node, "bspline", 2, superResolve=lambda volume, method, scale, **options: unstorable)
    assert node_ids(scene) == before
    assert hierarchy.GetNumberOfItems() == items_before
    with pytest.raises(RuntimeError, match="long long"):
        addVolumeNodeLike(unstorable, node, "direct")
    assert node_ids(scene) == before


def test_label_map_is_refused(scene):
    labels = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    slicer.util.updateVolumeFromArray(labels, np.zeros((2, 3, 4), dtype=np.uint8))
    before = node_ids(scene)
    with pytest.raises(InputError, match="label map"):
        superResolveVolumeNode(labels, "bspline", 2)
    assert node_ids(scene) == before


# --- the Slicer module's self-test ----------------------------------------------------------------------------------

class StandInTimer:
    """qt.QTimer as far as MedSR.py uses it; the stand-in slicer.app.processEvents() fires every started timer."""
    started = []

    def __init__(self):
        self.slots, self.single_shot = [], False
        self.timeout = types.SimpleNamespace(connect=self.slots.append)

    def setInterval(self, milliseconds):
        pass

    def setSingleShot(self, single_shot):
        self.single_shot = single_shot

    def start(self):
        if self not in self.started:
            self.started.append(self)

    def stop(self):
        if self in self.started:
            self.started.remove(self)

    @classmethod
    def fire_started(cls):
        for timer in list(cls.started):
            if timer.single_shot:
                timer.stop()
            for slot in timer.slots:
                slot()


def scene_backed(settings):
    """A stand-in for slicer.parameterNodeWrapper: each str, float, int or bool setting of the class becomes a property
    kept, as Slicer's wrapper keeps it, as a text parameter of the wrapped MRML node (its default while unset); node
    references are left out."""
    class Wrapper:
        def __init__(self, parameterNode):
            self.parameterNode = parameterNode

    def setting(name, kind, default):
        def get(self):
            text = self.parameterNode.GetParameter(name)
            return default if text == "" else text == "True" if kind is bool else kind(text)
        return property(get, lambda self, value: self.parameterNode.SetParameter(name, str(value)))
    for name, kind in typing.get_type_hints(settings).items():
        if kind in (str, float, int, bool):
            setattr(Wrapper, name, setting(name, kind, getattr(settings, name)))
    return Wrapper


@pytest.fixture
def medsr_module(scene, monkeypatch):
    """MedSR/MedSR.py imported against slicer-core with ``scene`` as slicer.mrmlScene. Stand-ins: Qt (a QTimer that
    slicer.app.processEvents fires) and CTK, the parameter node wrapper (:func:`scene_backed`), the scripted-module
    base classes (the test class is a unittest.TestCase, as in Slicer), SampleData, whose "MRHead" is a small
    oblique volume, and slicer.modules.sequences (slicer-core's own vtkSlicerSequencesLogic); PythonSlicer is this
    Python."""
    scripted = types.ModuleType("slicer.ScriptedLoadableModule")
    scripted.ScriptedLoadableModule = scripted.ScriptedLoadableModuleLogic = type("Base", (), {})
    scripted.ScriptedLoadableModuleWidget = type("Widget", (), {})
    scripted.ScriptedLoadableModuleTest = type("Test", (unittest.TestCase,), {"delayDisplay": lambda self, *a: None})
    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    wrapper.parameterNodeWrapper = scene_backed
    wrapper.Choice = wrapper.WithinRange = lambda *arguments: arguments
    sample_data = types.ModuleType("SampleData")
    sample_data.downloadSample = lambda name: make_input_node(slicer.mrmlScene, (6, 8, 10), (1.0, 1.0, 1.3), name=name)
    monkeypatch.setitem(sys.modules, "qt", types.SimpleNamespace(QTimer=StandInTimer))
    monkeypatch.setitem(sys.modules, "ctk", types.ModuleType("ctk"))  # only the panel's widgets use it
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", scripted)
    monkeypatch.setitem(sys.modules, "slicer.parameterNodeWrapper", wrapper)
    monkeypatch.setitem(sys.modules, "SampleData", sample_data)
    monkeypatch.setattr(StandInTimer, "started", [])
    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(processEvents=StandInTimer.fire_started), raising=False)
    # Slicer's Sequences module: its logic (the real class) and the browser node class it registers with the scene.
    scene.RegisterNodeClass(slicer.vtkMRMLSequenceBrowserNode())
    sequences_logic = slicer.vtkSlicerSequencesLogic()
    sequences_logic.SetMRMLScene(scene)
    monkeypatch.setattr(slicer, "modules", types.SimpleNamespace(
        sequences=types.SimpleNamespace(logic=lambda: sequences_logic)), raising=False)
    which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs:
                        sys.executable if name == "PythonSlicer" else which(name, *args, **kwargs))
    path = Path(__file__).resolve().parents[1] / "MedSR" / "MedSR.py"
    spec = importlib.util.spec_from_file_location("medsr_slicer_module", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_module_self_test_super_resolves_in_the_background_and_cancels_cleanly(medsr_module, scene):
    """MedSRTest.test_BSplineOnMRHead as Slicer runs it: B-spline ×(1, 1, 2) in a background process advanced by the
    logic's timer, then runs cancelled while the input is written and while the child runs, each leaving the scene as
    it was."""
    self_test = medsr_module.MedSRTest("test_BSplineOnMRHead")
    self_test.setUp()
    self_test.test_BSplineOnMRHead()
    results = [scene.GetNthNodeByClass(n, "vtkMRMLScalarVolumeNode") for n in range(volume_node_count(scene))]
    assert [node.GetAttribute("MedSR.method") for node in results] == [None, "bspline"]
    slicer.app.processEvents()
    assert StandInTimer.started == []  # the job timer stops at its first tick after the job ended


def test_the_logic_reports_every_step_and_stops_its_job(medsr_module, scene):
    node = make_input_node(scene)
    updates = []
    logic = medsr_module.MedSRLogic()
    job = logic.startJob(node, "bspline", (1, 1, 3), onUpdate=lambda job: updates.append(job.state))
    assert updates == [job.state] and job.active  # started and advanced one step, without waiting
    with pytest.raises(MedSRError, match="already running"):
        logic.startJob(node, "bspline", 2)
    logic.stopJob()  # what cleanup() and closing Slicer do
    assert (job.state, updates[-1]) == ("cancelled", "cancelled")
    with pytest.raises(ProcessLookupError):
        os.kill(job.child_pid, 0)
    assert StandInTimer.started == [] and volume_node_count(scene) == 1


def new_parameter_node(medsr_module, scene):
    return medsr_module.MedSRParameterNode(scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", "MedSR"))


def saved_and_restored(medsr_module, scene, folder):
    """The MedSR parameter node of ``scene`` after saving the scene to a file and loading that file again."""
    scene.SetURL(str(folder / "saved.mrml"))
    assert scene.Commit()
    restored_scene = slicer.vtkMRMLScene()
    restored_scene.SetURL(str(folder / "saved.mrml"))
    assert restored_scene.Connect()
    return medsr_module.MedSRParameterNode(restored_scene.GetFirstNodeByName("MedSR"))


def test_the_target_spacing_and_backend_are_saved_with_the_scene_and_restored(medsr_module, scene, tmp_path):
    parameters = new_parameter_node(medsr_module, scene)
    assert (parameters.targetSpacing, parameters.backend) == (0.0, "auto")  # unset: the scale, the measured rule
    parameters.targetSpacing, parameters.backend = 1.2, "openvino"
    restored = saved_and_restored(medsr_module, scene, tmp_path)
    assert (restored.targetSpacing, restored.backend) == (1.2, "openvino")


def test_the_logic_sends_the_target_spacing_instead_of_the_scale_and_the_backend(medsr_module, scene):
    """What the Super-resolve button starts when a target spacing is set; the result records both."""
    node = make_input_node(scene)  # 1 × 1 × 3 mm
    job = medsr_module.MedSRLogic().startJob(node, "bspline", None, target_spacing=1.0, backend="torch")
    assert job.request["scale"] is None
    assert (job.request["options"]["target_spacing"], job.request["options"]["backend"]) == (1.0, "torch")
    while job.active:
        slicer.app.processEvents()
    assert job.state == "done", job.message
    result = job.resultNodes["result"]
    assert (result.GetAttribute("MedSR.scale"), result.GetAttribute("MedSR.targetSpacing"),
            result.GetAttribute("MedSR.backend")) == ("1,1,3", "1", "torch")
    assert result.GetSpacing() == pytest.approx((1.0, 1.0, 1.0))


def add_diverging_color_table(scene):
    """A stand-in for the DivergingBlueRed colour table Slicer's Colors module adds at start-up (same node ID)."""
    table = slicer.vtkMRMLColorTableNode()
    table.SetName("DivergingBlueRed")
    table.SetSingletonTag("FileDivergingBlueRed.txt")
    scene.AddNode(table)
    return table


def run_linear_with_difference(scene, node):
    job = VolumeNodeJob(node, "linear", (1, 1, 2), {"device": "cpu"}, compare_bspline=True,
                        difference_to_bspline=True)
    job.start()
    while job.active:
        job.poll()
    assert job.state == JobState.DONE, job.message
    return job


def test_the_difference_to_bspline_sits_on_the_results_grid_centred_at_0(scene):
    color_table = add_diverging_color_table(scene)
    assert color_table.GetID() == DIFFERENCE_COLOR_NODE_IDS[0]
    node = make_input_node(scene, shape_kji=(5, 7, 8))  # oblique, 1 × 1 × 3 mm
    job = run_linear_with_difference(scene, node)
    result, bspline, difference = (job.resultNodes[name] for name in (RESULT, COMPARISON, DIFFERENCE))
    assert difference.GetName() == f"{result.GetName()} - bspline" == "input linear x1x1x2 - bspline"
    assert difference.GetSpacing() == pytest.approx(result.GetSpacing())
    assert difference.GetOrigin() == pytest.approx(result.GetOrigin())
    np.testing.assert_allclose(directions_of(difference), directions_of(result), atol=1e-12)
    np.testing.assert_allclose(directions_of(difference), OBLIQUE_RAS, atol=1e-12)
    values = {name: slicer.util.arrayFromVolume(n) for name, n in
              (("result", result), ("bspline", bspline), ("difference", difference))}
    assert values["difference"].dtype == np.float32
    assert values["difference"].shape == values["result"].shape == (10, 7, 8)
    for kji in [(0, 0, 0), (3, 2, 5), (7, 6, 1), (9, 6, 7)]:
        assert values["difference"][kji] == pytest.approx(float(values["result"][kji]) - float(values["bspline"][kji]),
                                                          abs=1e-4)
    assert np.abs(values["difference"]).max() > 0  # linear and B-spline differ between the thick slices
    display = difference.GetDisplayNode()
    half_width = np.percentile(np.abs(values["result"].astype(np.float32) - values["bspline"]), 99)
    assert display.GetColorNodeID() == color_table.GetID() and not display.GetAutoWindowLevel()
    assert (display.GetWindow(), display.GetLevel()) == pytest.approx((2 * half_width, 0.0), rel=1e-5)
    assert result.GetDisplayNode().GetColorNodeID() != color_table.GetID()  # the result keeps the input's look


def test_no_difference_is_made_for_bspline_itself(scene):
    job = VolumeNodeJob(make_input_node(scene), "bspline", (1, 1, 2), compare_bspline=True,
                        difference_to_bspline=True)
    assert not job.request["difference_to_bspline"] and job.output_names == [RESULT]


def test_the_metrics_table_holds_the_scores_it_is_given(scene):
    """The background process computes the scores (Testing/test_many_volumes.py checks them against compare); the
    table shows them as given, one row per method."""
    scores = {"linear": {"psnr": 31.25, "psnr_foreground": 30.0, "ssim": 0.875, "nrmse": 0.0625},
              "bspline": {"psnr": 30.5, "psnr_foreground": 29.0, "ssim": 0.8125, "nrmse": 0.078125}}
    table = addMetricsTableNode(scene, scores, "input linear metrics")
    assert table.GetClassName() == "vtkMRMLTableNode" and table.GetScene() is scene and table.GetLocked()
    assert table.GetName() == "input linear metrics"
    assert [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())] == ["method", "PSNR", "SSIM", "NRMSE"]
    assert table.GetColumnUnitLabel("PSNR") == "dB"
    assert table.GetNumberOfRows() == 2
    for row, method in enumerate(("linear", "bspline")):
        assert table.GetCellText(row, 0) == method
        got = [table.GetTable().GetValue(row, column).ToDouble() for column in (1, 2, 3)]
        assert got == [scores[method][key] for key in ("psnr", "ssim", "nrmse")]
    assert addMetricsTableNode(scene, scores, "input linear metrics").GetName() == "input linear metrics_1"


def vtk_matrix(array):
    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            matrix.SetElement(row, column, float(array[row][column]))
    return matrix


def test_the_module_self_test_checks_the_difference_and_the_metrics_table(medsr_module, scene):
    """MedSRTest.test_DifferenceAndMetrics as Slicer runs it (Slicer's DivergingBlueRed table stood in for)."""
    add_diverging_color_table(scene)
    self_test = medsr_module.MedSRTest("test_DifferenceAndMetrics")
    self_test.setUp()
    self_test.test_DifferenceAndMetrics()
    assert scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 1


def test_the_compare_view_settings_are_saved_with_the_scene_and_restored(medsr_module, scene, tmp_path):
    parameters = new_parameter_node(medsr_module, scene)
    assert (parameters.differenceView, parameters.zoom) == (False, 1.0)  # unset: no difference view, the whole volume
    parameters.differenceView, parameters.zoom = True, 3.5
    restored = saved_and_restored(medsr_module, scene, tmp_path)
    assert (restored.differenceView, restored.zoom) == (True, 3.5)


def test_the_logic_asks_the_background_process_for_the_difference(medsr_module, scene):
    """What the Super-resolve button starts with "Show difference to B-spline" checked."""
    logic = medsr_module.MedSRLogic()
    job = logic.startJob(make_input_node(scene), "linear", (1, 1, 2), differenceToBSpline=True)
    assert job.request["difference_to_bspline"] and not job.request["compare_bspline"]
    while job.active:
        slicer.app.processEvents()
    assert job.state == "done", job.message
    assert sorted(job.resultNodes) == [DIFFERENCE, RESULT]  # the B-spline itself is not added unless asked for


def test_the_module_self_test_runs_many_volumes_and_a_sequence(medsr_module, scene):
    """MedSRTest.test_ManyVolumesAndSequence as Slicer runs it: three volumes through the logic's timer, the constant
    one failing alone, then a three-item sequence into one output sequence in the same browser."""
    self_test = medsr_module.MedSRTest("test_ManyVolumesAndSequence")
    self_test.setUp()
    self_test.test_ManyVolumesAndSequence()
    assert scene.GetNumberOfNodesByClass("vtkMRMLSequenceNode") == 2  # the input sequence and the output sequence
    slicer.app.processEvents()
    assert StandInTimer.started == []
