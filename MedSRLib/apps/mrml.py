"""The bridge between 3D Slicer's MRML scene and MedSRLib (the only library module that touches Slicer).

Slicer places volumes in RAS space, MedSRLib (like ITK and DICOM) in LPS: the two differ by the sign of the first two
physical axes. A node's IJK→RAS matrix is diag(spacing) scaled directions plus origin; its voxel array, like
SimpleITK's, is in (k, j, i) order. ``slicer`` is imported inside the functions, so the rest of MedSRLib never needs it.

Console example (in Slicer's Python console)::

    from MedSRLib.apps.mrml import superResolveVolumeNode
    result = superResolveVolumeNode(getNode("MRHead"), "bspline", (1, 1, 2))

:class:`VolumeNodeJob` does the same in a background process, one step per ``poll()``, as the MedSR panel does;
:class:`VolumeNodesJob` runs it on several volumes and :class:`SequenceJob` on every volume of a sequence.
"""
from typing import Callable, Dict, Optional, Sequence

import numpy as np

from MedSRLib.errors import InputError
from MedSRLib.grid.geometry import parse_scale
from MedSRLib.io.volume import Volume
from .compare import symmetric_window
from .process import COMPARISON, DIFFERENCE, RESULT, JobSeries, JobState, SuperResolveJob

RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0])
ATTRIBUTE_PREFIX = "MedSR."
SCALAR_VOLUME_CLASS = "vtkMRMLScalarVolumeNode"


# Slicer's diverging colour tables (loaded by its Colors module at start-up), the first one present colours a
# difference: blue below 0, white at 0, red above.
DIFFERENCE_COLOR_NODE_IDS = ("vtkMRMLColorTableNodeFileDivergingBlueRed.txt",
                             "vtkMRMLColorTableNodeFileColdToHotRainbow.txt")
# The metrics table's score columns: title, key of MedSRLib.evaluation.metrics.compare, unit.
METRIC_COLUMNS = (("PSNR", "psnr", "dB"), ("SSIM", "ssim", ""), ("NRMSE", "nrmse", ""))

INPUT_REMOVED_MESSAGE = "Stopped: the input volume was removed from the scene; nothing was added."
REFERENCE_REMOVED_MESSAGE = "Stopped: the reference volume was removed from the scene; nothing was added."
SEQUENCE_REMOVED_MESSAGE = "Stopped: the sequence was removed from the scene; nothing was added."
SCENE_CLOSED_MESSAGE = "Stopped: the scene was closed; nothing was added."
METRICS = "metrics"   # the key of the metrics table in VolumeNodeJob.resultNodes


def volumeFromNode(volumeNode, copy: bool = True) -> Volume:
    """A scalar volume node's voxels and geometry as an LPS :class:`Volume`; the array is a copy, or with
    ``copy=False`` a view of the node's voxels (valid while the node keeps its image data). The node is not
    modified."""
    import slicer.util

    if volumeNode is None or volumeNode.GetImageData() is None:
        raise InputError("Select an input volume that contains image data.")
    if volumeNode.GetClassName() != SCALAR_VOLUME_CLASS:
        raise InputError(f"'{volumeNode.GetName()}' is a {volumeNode.GetClassName()}; MedSR needs a scalar volume "
                         "(not a label map, vector or tensor volume).")
    directions = np.zeros((3, 3))
    volumeNode.GetIJKToRASDirections(directions)
    array = np.array(slicer.util.arrayFromVolume(volumeNode), copy=copy)
    return Volume(array, volumeNode.GetSpacing(), RAS_FROM_LPS @ np.asarray(volumeNode.GetOrigin()),
                  tuple((RAS_FROM_LPS @ directions).ravel()), {"source": volumeNode.GetName()})


def addVolumeNodeLike(volume: Volume, referenceNode, name: str, attributes: Optional[dict] = None):
    """Add ``volume`` to ``referenceNode``'s scene as a new scalar volume node that looks and sits like the reference.

    It gets the reference's parent transform, display window/level and colour table, and is placed beside it in subject
    hierarchy (under its study). If anything fails, every node this call added is removed again.
    """
    scene = referenceNode.GetScene()
    added = []
    try:
        node = scene.AddNewNodeByClass(SCALAR_VOLUME_CLASS, scene.GenerateUniqueName(name))
        added.append(node)
        _fillVolumeNode(node, volume, attributes)
        node.SetAndObserveTransformNodeID(referenceNode.GetTransformNodeID())
        node.CreateDefaultDisplayNodes()
        added.append(node.GetDisplayNode())
        _showLike(referenceNode, node)
        return node
    except BaseException:
        _removeNodes(scene, reversed(added))
        raise


def _fillVolumeNode(node, volume: Volume, attributes: Optional[dict]) -> None:
    """Give a scalar volume node ``volume``'s voxels and geometry (LPS to RAS) and the MedSR ``attributes``."""
    import slicer.util

    node.SetSpacing(volume.spacing)
    node.SetOrigin(tuple(RAS_FROM_LPS @ np.asarray(volume.origin)))
    node.SetIJKToRASDirections(RAS_FROM_LPS @ volume.direction_matrix)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(volume.array))
    for key, value in (attributes or {}).items():
        node.SetAttribute(ATTRIBUTE_PREFIX + key, str(value))


def _showLike(referenceNode, node) -> None:
    """``node`` gets the reference's window/level and colours and sits beside it in subject hierarchy."""
    import slicer

    _copyDisplay(referenceNode.GetDisplayNode(), node.GetDisplayNode())
    _placeBeside(slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(node.GetScene()), referenceNode, node)


def _removeNodes(scene, nodes) -> None:
    for node in nodes:
        if node is not None and scene.IsNodePresent(node):
            scene.RemoveNode(node)


def _copyDisplay(source, target) -> None:
    if source is None or target is None:
        return
    target.SetAndObserveColorNodeID(source.GetColorNodeID())
    target.SetAutoWindowLevel(source.GetAutoWindowLevel())
    if not source.GetAutoWindowLevel():
        target.SetWindowLevel(source.GetWindow(), source.GetLevel())


def _placeBeside(shNode, referenceNode, node) -> None:
    """Put ``node``'s subject hierarchy item under the parent (the study) of the reference's item."""
    referenceItem = shNode.GetItemByDataNode(referenceNode)
    parent = shNode.GetItemParent(referenceItem) if referenceItem else shNode.GetSceneItemID()
    item = shNode.GetItemByDataNode(node)
    if item:
        shNode.SetItemParent(item, parent)
    else:
        shNode.CreateItem(parent, node)


def showAsDifference(node, halfWidth: float) -> None:
    """Display a difference volume centred at 0: a diverging colour table (when the scene has one of
    DIFFERENCE_COLOR_NODE_IDS) and a fixed window from −halfWidth to halfWidth."""
    display = node.GetDisplayNode()
    scene = node.GetScene()
    colorNodeID = next((nodeID for nodeID in DIFFERENCE_COLOR_NODE_IDS if scene.GetNodeByID(nodeID) is not None),
                       None)
    if colorNodeID is not None:
        display.SetAndObserveColorNodeID(colorNodeID)
    display.SetAutoWindowLevel(False)
    display.SetWindowLevel(*symmetric_window(halfWidth))


def addMetricsTableNode(scene, scores: Dict[str, dict], name: str):
    """A new, locked ``vtkMRMLTableNode`` ``name`` in ``scene`` with one row per method of ``scores`` (method →
    :func:`MedSRLib.evaluation.metrics.compare`'s scores, as the background process computes them): columns method,
    PSNR, SSIM, NRMSE."""
    import vtk

    methods = vtk.vtkStringArray()
    methods.SetName("method")
    for method in scores:
        methods.InsertNextValue(method)
    columns = [methods]
    for title, key, _ in METRIC_COLUMNS:
        column = vtk.vtkDoubleArray()
        column.SetName(title)
        for method in scores:
            column.InsertNextValue(scores[method][key])
        columns.append(column)
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(name))
    for column in columns:
        table.AddColumn(column)
    for title, _, unit in METRIC_COLUMNS:
        table.SetColumnUnitLabel(title, unit)
    table.SetUseColumnTitleAsColumnHeader(True)
    table.SetLocked(True)  # scores, not for editing in a table view
    return table


def provenanceAttributes(metadata: dict) -> dict:
    """The node attributes (without prefix) that record how a result was made."""
    scale = metadata.get("scale")
    target_spacing = metadata.get("target_spacing")
    return {
        "method": metadata.get("method", ""),
        "scale": ",".join(f"{float(v):g}" for v in scale) if scale is not None else "",
        "targetSpacing": f"{float(target_spacing):g}" if target_spacing is not None else "",
        "backend": metadata.get("backend", ""),
        "checkpointSHA256": metadata.get("checkpoint_sha256") or "",
        "version": metadata.get("medsr_version", ""),
    }


def defaultOutputName(inputNode, method: str, scale) -> str:
    scale_xyz = parse_scale(scale)
    factors = "x".join(f"{v:g}" for v in scale_xyz) if len(set(scale_xyz)) > 1 else f"{scale_xyz[0]:g}"
    return f"{inputNode.GetName()} {method} x{factors}"


def superResolveVolumeNode(inputNode, method: str = "bspline", scale=2, *, outputName: Optional[str] = None,
                           superResolve: Optional[Callable] = None, **options):
    """Super-resolve a scalar volume node; return the new ``vtkMRMLScalarVolumeNode`` added to the input's scene.

    ``scale`` is one factor or one per (x, y, z) = (i, j, k) axis; ``options`` go to :func:`MedSRLib.super_resolve`
    (patch, stride, blend, device, checkpoint, progress, cancel, ...). ``superResolve`` replaces that function, e.g.
    by :func:`MedSRLib.apps.process.super_resolve_in_subprocess` to run in a background process. The input node is never
    modified, and on error or cancel the scene is left exactly as it was.
    """
    if superResolve is None:
        from MedSRLib.api import super_resolve as superResolve
    result = superResolve(volumeFromNode(inputNode), method, scale, **options)
    # The scale the result records (the one a target spacing gave), else the one asked for.
    name = outputName or defaultOutputName(inputNode, method, result.metadata.get("scale", scale))
    return addVolumeNodeLike(result, inputNode, name, provenanceAttributes(result.metadata))


class SceneWatch:
    """Calls ``stop(message)`` when ``scene`` starts closing (SCENE_CLOSED_MESSAGE) or one of ``nodes`` (node → the
    message for its removal) leaves it, until ``close()``."""

    def __init__(self, scene, nodes: Dict[object, str], stop: Callable[[str], None]):
        self.scene, self.nodes, self.stop = scene, nodes, stop
        self._tags = [scene.AddObserver(scene.StartCloseEvent, self._onSceneClosing),
                      scene.AddObserver(scene.NodeRemovedEvent, self._onNodeRemoved)]

    def _onSceneClosing(self, caller, event) -> None:
        self.stop(SCENE_CLOSED_MESSAGE)

    def _onNodeRemoved(self, caller, event) -> None:
        removed = next((message for node, message in self.nodes.items() if not self.scene.IsNodePresent(node)), None)
        if removed is not None:
            self.stop(removed)

    def close(self) -> None:
        for tag in self._tags:
            self.scene.RemoveObserver(tag)
        self._tags = []


class _WatchesScene:
    """A job that stops when its scene closes or a node it needs leaves the scene (``_watchScene``), and stops
    watching whenever it ends."""
    _watch: Optional[SceneWatch] = None

    def _watchScene(self, scene, nodes: Dict[object, str]) -> None:
        self._watch = SceneWatch(scene, nodes, self.cancel)

    def _end(self, state: JobState, message: str) -> None:
        super()._end(state, message)
        if self._watch is not None:
            self._watch.close()


def _sceneOf(node, what: str):
    scene = node.GetScene() if node is not None else None
    if scene is None:
        raise InputError(f"Select {what} that is in the scene.")
    return scene


class VolumeNodeJob(_WatchesScene, SuperResolveJob):
    """:class:`~MedSRLib.apps.process.SuperResolveJob` from a scalar volume node to new nodes beside it, one step per
    ``poll()`` (the MedSR panel drives it from a timer).

    The input's voxels (and a ``referenceNode``'s) are written for the background process straight from the node, a
    slab per poll. In the last step the result (with ``compare_bspline`` the cubic B-spline comparison, with
    ``difference_to_bspline`` the difference result − B-spline, named after the result and shown by
    :func:`showAsDifference`) is added as by :func:`addVolumeNodeLike`, and with a reference the table of the scores
    the background process computed (:func:`addMetricsTableNode`, ``"<result> metrics"``), all or none:
    ``resultNodes`` maps ``"result"`` / ``"comparison"`` / ``"difference"`` / ``"metrics"`` to them. A reference on
    another grid adds no table; ``metrics_error`` says why. Removing the input or reference node or closing its scene
    stops the job at once (the child is killed) with one message; on every end but DONE the scene is left as it was.
    """

    def __init__(self, inputNode, method: str = "bspline", scale=2, options: Optional[dict] = None, *,
                 outputName: Optional[str] = None, referenceNode=None, **jobOptions):
        super().__init__(None, method, scale, options, score_against_reference=referenceNode is not None,
                         **jobOptions)
        self.inputNode = inputNode
        self.referenceNode = referenceNode
        self.outputName = outputName
        self.resultNodes: Dict[str, object] = {}
        self._scene = None

    def _begin(self) -> None:
        scene = _sceneOf(self.inputNode, "an input volume")
        self.volume = volumeFromNode(self.inputNode, copy=False)
        watched = {self.inputNode: INPUT_REMOVED_MESSAGE}
        if self.referenceNode is not None:
            if _sceneOf(self.referenceNode, "a reference volume") is not scene:
                raise InputError("Select a reference volume in the input's scene.")
            self.reference = volumeFromNode(self.referenceNode, copy=False)
            watched[self.referenceNode] = REFERENCE_REMOVED_MESSAGE
        self._scene = scene
        self._watchScene(scene, watched)
        super()._begin()

    def _deliver(self) -> None:
        scale = self.results[RESULT].metadata["scale"]  # the scale asked for, or the one a target spacing gave
        names = {RESULT: self.outputName or defaultOutputName(self.inputNode, self.method, scale),
                 COMPARISON: defaultOutputName(self.inputNode, "bspline", scale)}
        added = []
        try:
            for output in self.output_names:
                volume = self.results[output]
                # The difference is named after the result node (added first, its name made unique).
                name = f"{added[0].GetName()} - bspline" if output == DIFFERENCE else names[output]
                added.append(addVolumeNodeLike(volume, self.inputNode, name, provenanceAttributes(volume.metadata)))
                if output == DIFFERENCE:
                    showAsDifference(added[-1], volume.metadata["display_half_width"])
            outputs = list(self.output_names)
            if self.metrics is not None:
                added.append(addMetricsTableNode(self._scene, self.metrics, f"{added[0].GetName()} metrics"))
                outputs.append(METRICS)
        except BaseException:
            _removeNodes(self._scene, [part for node in reversed(added) for part in _withParts(node)])
            raise
        self.resultNodes = dict(zip(outputs, added))

    def done_message(self) -> str:
        return f"Done: {self.resultNodes[RESULT].GetName()}"


def _withParts(node):
    """``node`` with its display and storage nodes (those it has)."""
    parts = [getattr(node, getter)() for getter in ("GetDisplayNode", "GetStorageNode") if hasattr(node, getter)]
    return [node, *parts]


class VolumeNodesJob(_WatchesScene, JobSeries):
    """:class:`VolumeNodeJob` on each of several volume nodes in turn (``options`` and ``jobOptions`` as for one),
    each result added beside its input as soon as it is done. A failed volume does not stop the others; a cancel
    keeps the volumes done before it; closing the scene stops the rest. ``lines`` has one line per volume."""

    def __init__(self, inputNodes: Sequence, method: str = "bspline", scale=2, options: Optional[dict] = None,
                 **jobOptions):
        self.inputNodes = list(inputNodes)
        super().__init__([node.GetName() for node in self.inputNodes],
                         lambda index: VolumeNodeJob(self.inputNodes[index], method, scale, options, **jobOptions))
        self.resultNodes: Dict[str, object] = {}   # input node ID → its result node

    def _begin(self) -> None:
        if not self.inputNodes:
            self._end(JobState.FAILED, "Check at least one volume to super-resolve.")
            return
        scene = self.inputNodes[0].GetScene()
        if scene is not None:
            self._watchScene(scene, {})

    def _take_item(self, index: int, job: VolumeNodeJob) -> None:
        self.resultNodes[self.inputNodes[index].GetID()] = job.resultNodes[RESULT]

    def kept_after_cancel(self) -> str:
        done = len(self.done_items)
        if done == 0:
            return "nothing was added."
        return "the volume done before stays in the scene." if done == 1 else \
            f"the {done} volumes done before stay in the scene."


def sequenceOfProxyNode(node):
    """``(browser, sequence)``: the sequence browser that shows ``node`` as a proxy and the sequence it shows, or
    ``(None, None)``."""
    scene = node.GetScene() if node is not None else None
    if scene is None:
        return None, None
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSequenceBrowserNode")):
        browser = scene.GetNthNodeByClass(index, "vtkMRMLSequenceBrowserNode")
        sequence = browser.GetSequenceNode(node)
        if sequence is not None:
            return browser, sequence
    return None, None


class SequenceJob(_WatchesScene, JobSeries):
    """Every volume of the sequence that a browser shows as ``proxyNode``, in turn, into one new sequence node: items
    at the input's index values (its index name, unit and type), each on its own input item's grid, added with the
    sequence to the scene and synchronised in the same browser once all items ended (``sequencesLogic``, Slicer's
    ``vtkSlicerSequencesLogic``, then makes its proxy volume, shown like the input's). A failed item is left out and
    its line says why; a cancel, the sequence or browser removed, or the scene closed add nothing.
    ``outputSequence`` and ``outputProxy`` are the new nodes."""
    item_word = "sequence item"

    def __init__(self, proxyNode, method: str = "bspline", scale=2, options: Optional[dict] = None, *,
                 sequencesLogic=None, **jobOptions):
        self.proxyNode = proxyNode
        self.browser, self.sequence = sequenceOfProxyNode(proxyNode)
        count = self.sequence.GetNumberOfDataNodes() if self.sequence is not None else 0
        self.indexValues = [self.sequence.GetNthIndexValue(n) for n in range(count)]
        names = [f"{self.sequence.GetName()} [{value}]" for value in self.indexValues]
        super().__init__(names, lambda index: SuperResolveJob(
            volumeFromNode(self.sequence.GetNthDataNode(index), copy=False), method, scale, options, **jobOptions))
        self.method = method
        self.sequencesLogic = sequencesLogic
        self.outputSequence = None
        self.outputProxy = None
        self._items = []   # (index value, volume node outside any scene, its metadata) per done item

    def _begin(self) -> None:
        if self.proxyNode is None:
            self._end(JobState.FAILED, "Select an input volume of a sequence.")
            return
        if self.sequence is None:
            self._end(JobState.FAILED, f"'{self.proxyNode.GetName()}' is not shown by a sequence browser, so it has "
                                       "no sequence to super-resolve; choose a volume of a sequence.")
            return
        if not self.indexValues:
            self._end(JobState.FAILED, f"The sequence '{self.sequence.GetName()}' has no volumes.")
            return
        if self.sequence.GetDataNodeClassName() != SCALAR_VOLUME_CLASS:
            self._end(JobState.FAILED, f"The sequence '{self.sequence.GetName()}' holds "
                                       f"{self.sequence.GetDataNodeClassName()} items; MedSR needs scalar volumes.")
            return
        self._watchScene(self.sequence.GetScene(), {self.sequence: SEQUENCE_REMOVED_MESSAGE,
                                                    self.browser: SEQUENCE_REMOVED_MESSAGE})

    def _take_item(self, index: int, job: SuperResolveJob) -> None:
        import slicer

        volume = job.results[RESULT]
        node = slicer.vtkMRMLScalarVolumeNode()
        node.SetName(f"{defaultOutputName(self.sequence, self.method, volume.metadata['scale'])} "
                     f"[{self.indexValues[index]}]")
        _fillVolumeNode(node, volume, provenanceAttributes(volume.metadata))
        self._items.append((self.indexValues[index], node, volume.metadata))

    def _deliver(self) -> None:
        import slicer

        scene = self.sequence.GetScene()
        metadata = self._items[0][2]
        output = slicer.vtkMRMLSequenceNode()
        output.SetName(scene.GenerateUniqueName(defaultOutputName(self.sequence, self.method, metadata["scale"])))
        output.SetIndexName(self.sequence.GetIndexName())
        output.SetIndexUnit(self.sequence.GetIndexUnit())
        output.SetIndexType(self.sequence.GetIndexType())
        for key, value in provenanceAttributes(metadata).items():
            output.SetAttribute(ATTRIBUTE_PREFIX + key, str(value))
        for value, node, _ in self._items:
            output.SetDataNodeAtValue(node, value)  # a copy goes into the sequence
        self._items = []
        scene.AddNode(output)
        try:
            self.browser.AddSynchronizedSequenceNode(output)
            if self.sequencesLogic is not None:
                self.sequencesLogic.UpdateProxyNodesFromSequences(self.browser)
                self.outputProxy = self.browser.GetProxyNode(output)
            if self.outputProxy is not None:
                self.outputProxy.SetAndObserveTransformNodeID(self.proxyNode.GetTransformNodeID())
                if self.outputProxy.GetDisplayNode() is None:
                    self.outputProxy.CreateDefaultDisplayNodes()
                _showLike(self.proxyNode, self.outputProxy)
        except BaseException:
            self.browser.RemoveSynchronizedSequenceNode(output.GetID())
            proxy, self.outputProxy = self.outputProxy, None
            _removeNodes(scene, [part for node in (proxy, output) if node is not None for part in _withParts(node)])
            raise
        self.outputSequence = output

    def _end(self, state: JobState, message: str) -> None:
        super()._end(state, message)
        self._items = []
