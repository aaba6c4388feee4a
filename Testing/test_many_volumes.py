"""Many volumes and the metrics from the background process, against a real MRML scene (PyPI's slicer-core) with the
real background process: VolumeNodesJob over several volumes (one failing midway, a cancel), SequenceJob over every
volume of a sequence shown by a browser (one output sequence), and VolumeNodeJob's metrics computed by the child."""
import os
import time

import numpy as np
import pytest

from MedSRLib.apps.compare import scores_against_reference
from MedSRLib.apps.process import CANCELLED_MESSAGE, JobState

slicer = pytest.importorskip("slicer", reason="needs PyPI's slicer-core (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package is not slicer-core (pip install slicer-core)", allow_module_level=True)
import vtk  # noqa: E402  (installed with slicer-core)

from MedSRLib.apps.mrml import (METRICS, SEQUENCE_REMOVED_MESSAGE, SequenceJob, VolumeNodeJob,  # noqa: E402
                                VolumeNodesJob, sequenceOfProxyNode, superResolveVolumeNode, volumeFromNode)
from MedSRLib.apps.process import COMPARISON, RESULT  # noqa: E402
# The background process's test methods (test-fail-thick, test-wait-thick among them) and where the job folders go.
from test_panel_state import job_folders, node_ids  # noqa: E402,F401  (job_folders is a fixture)

SHAPE = (4, 5, 6)


@pytest.fixture
def scene():
    scene = slicer.vtkMRMLScene()
    slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    # Slicer's Sequences module registers the browser class with the scene; slicer-core does not load that module.
    scene.RegisterNodeClass(slicer.vtkMRMLSequenceBrowserNode())
    return scene


def ramp(factor=1.0):
    return np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE) * factor


def add_volume(scene, name, spacing, array):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    node.SetSpacing(spacing)
    node.SetOrigin(10.0, -20.0, 5.0)
    slicer.util.updateVolumeFromArray(node, array)
    node.CreateDefaultDisplayNodes()
    return node


def run(job, until=lambda job: False, timeout_s=120.0):
    """Poll ``job`` while it is active and ``until(job)`` is False."""
    deadline = time.monotonic() + timeout_s
    job.start()
    while job.active and not until(job):
        assert time.monotonic() < deadline, f"stuck in {job.state} ({job.stage})"
        if job.poll() == JobState.RUNNING:
            time.sleep(0.01)
    return job


def assert_children_gone(pids):
    assert pids
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def observed(scene):
    return scene.HasObserver(scene.StartCloseEvent), scene.HasObserver(scene.NodeRemovedEvent)


# --- several volumes --------------------------------------------------------------------------------------------------

def test_a_volume_failing_midway_does_not_stop_the_others(scene, job_folders):
    nodes = [add_volume(scene, "first", (1.0, 1.0, 1.5), ramp()),
             add_volume(scene, "thick", (1.0, 1.0, 3.0), ramp(2.0)),
             add_volume(scene, "last", (0.5, 0.5, 1.0), ramp(3.0))]
    before, watched = node_ids(scene), observed(scene)
    inputs_before = [slicer.util.arrayFromVolume(node).copy() for node in nodes]
    job = VolumeNodesJob(nodes, "test-fail-thick", (1, 1, 2), {"device": "cpu"})
    progress = set()
    run(job, until=lambda job: progress.add(job.progress) and False)
    assert (job.state, job.message) == (JobState.DONE, "Done: 2 of 3 volumes super-resolved, 1 failed."), job.lines
    assert job.lines == ["first: Done: first test-fail-thick x1x1x2",
                         "thick: failed: The test method failed midway.",
                         "last: Done: last test-fail-thick x1x1x2"]
    assert {(0, 3), (1, 3), (2, 3)} <= progress and job.progress == (3, 3)
    first, last = (job.resultNodes[node.GetID()] for node in (nodes[0], nodes[2]))
    assert nodes[1].GetID() not in job.resultNodes
    assert set(node_ids(scene)) - set(before) == {first.GetID(), last.GetID(), first.GetDisplayNode().GetID(),
                                                  last.GetDisplayNode().GetID()}
    assert first.GetSpacing() == pytest.approx((1.0, 1.0, 0.75)) and last.GetSpacing() == pytest.approx((0.5, 0.5, 0.5))
    assert slicer.util.arrayFromVolume(last).shape == (8, 5, 6)
    assert last.GetAttribute("MedSR.method") == "test-fail-thick"
    for node, array in zip(nodes, inputs_before):  # the inputs are never modified
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), array)
    assert len(job.child_pids) == 3
    assert_children_gone(job.child_pids)
    assert list(job_folders.iterdir()) == [] and observed(scene) == watched


def test_cancel_during_a_multi_volume_run_keeps_the_volumes_done_before(scene, job_folders):
    nodes = [add_volume(scene, "first", (1.0, 1.0, 1.5), ramp()),
             add_volume(scene, "thick", (1.0, 1.0, 3.0), ramp(2.0)),
             add_volume(scene, "last", (1.0, 1.0, 1.5), ramp(3.0))]
    before, watched = node_ids(scene), observed(scene)
    job = VolumeNodesJob(nodes, "test-wait-thick", (1, 1, 2), {"device": "cpu"})
    # The second volume's child waits: cancel once it runs.
    run(job, until=lambda job: job.progress == (1, 3) and job.state == JobState.RUNNING
        and job.current.progress == (1, 10))
    assert job.active
    running = job.child_pid
    os.kill(running, 0)  # alive
    job.cancel()
    assert (job.state, job.message) == (
        JobState.CANCELLED, "Cancelled at volume 2 of 3; the volume done before stays in the scene.")
    assert job.lines == ["first: Done: first test-wait-thick x1x1x2", f"thick: {CANCELLED_MESSAGE}",
                         "last: not run."]
    assert job.poll() == JobState.CANCELLED and len(job.child_pids) == 2  # the last volume never started
    first = job.resultNodes[nodes[0].GetID()]
    assert set(node_ids(scene)) - set(before) == {first.GetID(), first.GetDisplayNode().GetID()}
    assert_children_gone(job.child_pids)
    assert list(job_folders.iterdir()) == [] and observed(scene) == watched


def test_closing_the_scene_stops_the_rest(scene, job_folders):
    nodes = [add_volume(scene, name, (1.0, 1.0, 3.0), ramp()) for name in ("one", "two")]
    job = run(VolumeNodesJob(nodes, "test-wait-thick", (1, 1, 2), {"device": "cpu"}),
              until=lambda job: job.state == JobState.RUNNING and job.current.progress == (1, 10))
    scene.Clear(0)
    assert (job.state, job.message) == (JobState.CANCELLED, "Stopped: the scene was closed; nothing was added.")
    assert job.lines == ["one: Stopped: the scene was closed; nothing was added.", "two: not run."]
    assert_children_gone(job.child_pids)
    assert list(job_folders.iterdir()) == []


def test_no_volume_checked_is_one_sentence(scene):
    job = VolumeNodesJob([], "bspline", 2)
    assert job.start() == JobState.FAILED and job.message == "Check at least one volume to super-resolve."


# --- every volume of a sequence ---------------------------------------------------------------------------------------

OBLIQUE_RAS = np.array([[0.8, 0.0, 0.6], [0.0, 1.0, 0.0], [-0.6, 0.0, 0.8]])


def add_sequence(scene, arrays, index_values, thicknesses=None):
    """A sequence of oblique 1 × 1 × 3 mm volumes (or ``thicknesses`` mm along k) shown by a browser, with its proxy
    volume made by the real vtkSlicerSequencesLogic, as Slicer's Sequences module does; returns (proxy, sequence,
    browser, logic)."""
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "cine")
    sequence.SetIndexName("time")
    sequence.SetIndexUnit("s")
    for array, value, thickness in zip(arrays, index_values, thicknesses or [3.0] * len(arrays)):
        item = slicer.vtkMRMLScalarVolumeNode()
        item.SetSpacing(1.0, 1.0, thickness)
        item.SetOrigin(10.0, -20.0, 5.0)
        item.SetIJKToRASDirections(OBLIQUE_RAS)
        slicer.util.updateVolumeFromArray(item, array)
        sequence.SetDataNodeAtValue(item, value)
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", "cine browser")
    browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    logic = slicer.vtkSlicerSequencesLogic()
    logic.SetMRMLScene(scene)
    logic.UpdateProxyNodesFromSequences(browser)
    return browser.GetProxyNode(sequence), sequence, browser, logic


def ijk_to_ras(node):
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def test_every_volume_of_a_sequence_gives_one_output_sequence(scene, job_folders):
    """Four items, the third constant (the background process refuses it): the output sequence has the other three at
    their index values, each on its input item's grid made ×(1, 1, 3) finer, synchronised in the same browser."""
    arrays = [ramp(), ramp(2.0), np.full(SHAPE, 7.0, dtype=np.float32), ramp(4.0)]
    proxy, sequence, browser, logic = add_sequence(scene, arrays, ["0", "0.5", "1", "1.5"])
    assert sequenceOfProxyNode(proxy) == (browser, sequence)
    before, watched = node_ids(scene), observed(scene)
    job = run(SequenceJob(proxy, "linear", (1, 1, 3), {"device": "cpu"}, sequencesLogic=logic))
    assert (job.state, job.message) == (JobState.DONE, "Done: 3 of 4 sequence items super-resolved, 1 failed.")
    assert job.lines[:2] == ["cine [0]: Done.", "cine [0.5]: Done."] and job.lines[3] == "cine [1.5]: Done."
    assert job.lines[2].startswith("cine [1]: failed: ") and "constant" in job.lines[2]
    output = job.outputSequence
    assert output.GetName() == "cine linear x1x1x3" and output.GetScene() is scene
    assert (output.GetIndexName(), output.GetIndexUnit()) == ("time", "s")
    assert [output.GetNthIndexValue(n) for n in range(output.GetNumberOfDataNodes())] == ["0", "0.5", "1.5"]
    assert output.GetAttribute("MedSR.method") == "linear" and output.GetAttribute("MedSR.scale") == "1,1,3"
    corner = np.array([-0.5, -0.5, -0.5, 1.0])
    for n, source in zip(range(3), (0, 1, 3)):
        item, input_item = output.GetNthDataNode(n), sequence.GetNthDataNode(source)
        assert item.GetSpacing() == pytest.approx((1.0, 1.0, 1.0))
        directions = np.zeros((3, 3))
        item.GetIJKToRASDirections(directions)
        np.testing.assert_allclose(directions, OBLIQUE_RAS, atol=1e-12)
        np.testing.assert_allclose(ijk_to_ras(item) @ corner, ijk_to_ras(input_item) @ corner, atol=1e-9)
        values = slicer.util.arrayFromVolume(item)
        assert values.shape == (12, 5, 6)
        # Output slice 3m + 1 lies on input slice m, where linear interpolation takes the input's values.
        np.testing.assert_allclose(values[1::3], arrays[source], rtol=1e-4, atol=1e-3)
    for n, array in enumerate(arrays):  # the input sequence is not modified
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(sequence.GetNthDataNode(n)), array)
    assert browser.IsSynchronizedSequenceNodeID(output.GetID())
    assert job.outputProxy is browser.GetProxyNode(output) and job.outputProxy.GetScene() is scene
    proxy_parts = (job.outputProxy, job.outputProxy.GetDisplayNode(), job.outputProxy.GetStorageNode())
    assert set(node_ids(scene)) - set(before) == {output.GetID()} | {part.GetID() for part in proxy_parts}
    assert len(job.child_pids) == 4
    assert_children_gone(job.child_pids)
    assert list(job_folders.iterdir()) == [] and observed(scene) == watched


@pytest.mark.parametrize("stop, message", [
    (lambda job, scene, sequence: job.cancel(), "Cancelled at sequence item 2 of 3; nothing was added."),
    (lambda job, scene, sequence: scene.RemoveNode(sequence), SEQUENCE_REMOVED_MESSAGE),
], ids=["cancel", "sequence-removed"])
def test_stopping_a_sequence_run_adds_nothing(scene, job_folders, stop, message):
    proxy, sequence, browser, logic = add_sequence(scene, [ramp(), ramp(2.0), ramp(3.0)], ["0", "1", "2"],
                                                   thicknesses=[1.5, 3.0, 3.0])
    before, watched = node_ids(scene), observed(scene)
    # The first item is done; the second is 3 mm thick, so its child waits: stop it then.
    job = run(SequenceJob(proxy, "test-wait-thick", (1, 1, 3), {"device": "cpu"}, sequencesLogic=logic),
              until=lambda job: job.progress == (1, 3) and job.state == JobState.RUNNING
              and job.current.progress == (1, 10))
    stop(job, scene, sequence)
    assert (job.state, job.message) == (JobState.CANCELLED, message)
    assert job.lines[0] == "cine [0]: Done." and job.lines[2] == "cine [2]: not run."
    assert job.outputSequence is None and browser.GetNumberOfSynchronizedSequenceNodes() == 0  # none besides the input
    assert set(node_ids(scene)) <= set(before)
    assert_children_gone(job.child_pids)
    assert list(job_folders.iterdir()) == [] and observed(scene) == watched


def test_a_volume_outside_any_sequence_is_one_sentence(scene):
    node = add_volume(scene, "plain", (1.0, 1.0, 3.0), ramp())
    job = SequenceJob(node, "bspline", 2)
    assert job.start() == JobState.FAILED
    assert job.message == ("'plain' is not shown by a sequence browser, so it has no sequence to super-resolve; "
                           "choose a volume of a sequence.")


# --- the metrics, computed by the background process ------------------------------------------------------------------

SCORED_SHAPE = (5, 8, 9)  # SSIM needs 7 voxels along every axis of the result


def test_the_metrics_come_from_the_background_process_and_equal_compare_computed_directly(scene, job_folders):
    node = add_volume(scene, "input", (1.0, 1.0, 3.0), np.arange(360, dtype=np.float32).reshape(SCORED_SHAPE))
    node.SetIJKToRASDirections(OBLIQUE_RAS)
    # A reference on the ×(1, 1, 2) result's grid: B-spline made in this process, plus noise.
    reference = superResolveVolumeNode(node, "bspline", (1, 1, 2), outputName="reference")
    noisy = slicer.util.arrayFromVolume(reference) + np.random.default_rng(0).normal(0, 3, (10, 8, 9))
    slicer.util.updateVolumeFromArray(reference, noisy.astype(np.float32))
    reference_before = slicer.util.arrayFromVolume(reference).copy()
    job = run(VolumeNodeJob(node, "linear", (1, 1, 2), {"device": "cpu"}, referenceNode=reference))
    assert job.state == JobState.DONE, job.message
    assert job.request["score_against_reference"] and not job.request["compare_bspline"]
    assert sorted(job.resultNodes) == [METRICS, RESULT], job.metrics_error  # the B-spline was scored, not added
    result = job.resultNodes[RESULT]
    bspline = superResolveVolumeNode(node, "bspline", (1, 1, 2))  # what the child computed for the B-spline row
    expected = scores_against_reference({"linear": volumeFromNode(result), "bspline": volumeFromNode(bspline)},
                                        volumeFromNode(reference))
    assert list(job.metrics) == ["linear", "bspline"]
    for method in expected:
        assert job.metrics[method] == pytest.approx(expected[method], rel=1e-6)
    table = job.resultNodes[METRICS]
    assert table.GetName() == "input linear x1x1x2 metrics" and table.GetLocked()
    assert [table.GetCellText(row, 0) for row in range(2)] == ["linear", "bspline"]
    for row, method in enumerate(("linear", "bspline")):
        got = [table.GetTable().GetValue(row, column).ToDouble() for column in (1, 2, 3)]
        assert got == [job.metrics[method][key] for key in ("psnr", "ssim", "nrmse")]
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(reference), reference_before)
    assert_children_gone([job.child_pid])
    assert list(job_folders.iterdir()) == []


def test_a_reference_on_another_grid_gives_the_result_one_sentence_and_no_table(scene, job_folders):
    node = add_volume(scene, "input", (1.0, 1.0, 3.0), ramp())
    other = add_volume(scene, "other", (1.0, 1.0, 1.0), ramp())   # 4 slices, not 8
    tables = scene.GetNumberOfNodesByClass("vtkMRMLTableNode")
    job = run(VolumeNodeJob(node, "linear", (1, 1, 2), {"device": "cpu"}, compare_bspline=True,
                            referenceNode=other))
    assert job.state == JobState.DONE, job.message
    assert sorted(job.resultNodes) == [COMPARISON, RESULT] and job.metrics is None
    assert "different grids" in job.metrics_error and job.metrics_error.endswith(".")
    assert "6×5×4 voxels of 1×1×1 mm" in job.metrics_error and "6×5×8 voxels of 1×1×1.5 mm" in job.metrics_error
    assert scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == tables


def test_removing_the_reference_mid_run_stops_the_job(scene, job_folders):
    from MedSRLib.apps.mrml import REFERENCE_REMOVED_MESSAGE
    node = add_volume(scene, "input", (1.0, 1.0, 3.0), ramp())
    reference = add_volume(scene, "reference", (1.0, 1.0, 1.5), np.zeros((8, 5, 6), dtype=np.float32))
    job = run(VolumeNodeJob(node, "test-wait-thick", (1, 1, 2), {"device": "cpu"}, referenceNode=reference),
              until=lambda job: job.state == JobState.RUNNING and job.progress == (1, 10))
    scene.RemoveNode(reference)
    assert (job.state, job.message, job.resultNodes) == (JobState.CANCELLED, REFERENCE_REMOVED_MESSAGE, {})
    assert_children_gone([job.child_pid])
    assert list(job_folders.iterdir()) == []


def test_the_background_process_reports_the_scoring_stage_and_its_progress(tmp_path):
    """What the progress bar shows while the child scores: the stage line, then one step per volume scored."""
    import subprocess
    from MedSRLib.apps.process import JobFolder, worker_command
    from MedSRLib.io.volume import Volume
    folder = JobFolder(tmp_path)
    folder.write_json(JobFolder.REQUEST, {"method": "linear", "scale": [1, 1, 2], "options": {"device": "cpu"},
                                          "compare_bspline": False, "difference_to_bspline": False,
                                          "score_against_reference": True})
    folder.save_volume("input", Volume(np.arange(360, dtype=np.float32).reshape(SCORED_SHAPE), (1.0, 1.0, 3.0)))
    # On the result's grid: half the slice spacing, the first slice's centre 0.75 mm further back.
    folder.save_volume("reference", Volume(np.arange(720, dtype=np.float32).reshape(10, 8, 9) ** 0.5, (1.0, 1.0, 1.5),
                                           (0.0, 0.0, -0.75)))
    command, env = worker_command(None, "run", str(tmp_path))
    lines = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout.splitlines()
    scoring = lines.index("MEDSR-STAGE Scoring against the reference (PSNR, SSIM, NRMSE)")
    assert lines[scoring + 1:] == ["MEDSR-PROGRESS 0/2", "MEDSR-PROGRESS 1/2", "MEDSR-PROGRESS 2/2"]
    assert set(folder.read_json(JobFolder.METRICS)["scores"]) == {"linear", "bspline"}
