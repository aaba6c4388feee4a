"""The bridge between 3D Slicer's MRML scene and MedSRLib (the only library module that touches Slicer).

Slicer places volumes in RAS space, MedSRLib (like ITK and DICOM) in LPS: the two differ by the sign of the first two
physical axes. A node's IJK→RAS matrix is diag(spacing) scaled directions plus origin; its voxel array, like
SimpleITK's, is in (k, j, i) order. ``slicer`` is imported inside the functions, so the rest of MedSRLib never needs it.

Console example (in Slicer's Python console)::

    from MedSRLib.apps.mrml import superResolveVolumeNode
    result = superResolveVolumeNode(getNode("MRHead"), "bspline", (1, 1, 2))

:class:`VolumeNodeJob` does the same in a background process, one step per ``poll()``, as the MedSR panel does.
"""
from typing import Callable, Dict, Optional

import numpy as np

from MedSRLib.errors import InputError
from MedSRLib.grid.geometry import parse_scale
from MedSRLib.io.volume import Volume
from .compare import scores_against_reference, symmetric_window
from .process import COMPARISON, DIFFERENCE, RESULT, JobState, SuperResolveJob

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
SCENE_CLOSED_MESSAGE = "Stopped: the scene was closed; nothing was added."


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
    import slicer
    import slicer.util

    scene = referenceNode.GetScene()
    added = []
    try:
        node = scene.AddNewNodeByClass(SCALAR_VOLUME_CLASS, scene.GenerateUniqueName(name))
        added.append(node)
        node.SetSpacing(volume.spacing)
        node.SetOrigin(tuple(RAS_FROM_LPS @ np.asarray(volume.origin)))
        node.SetIJKToRASDirections(RAS_FROM_LPS @ volume.direction_matrix)
        slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(volume.array))
        node.SetAndObserveTransformNodeID(referenceNode.GetTransformNodeID())
        for key, value in (attributes or {}).items():
            node.SetAttribute(ATTRIBUTE_PREFIX + key, str(value))

        node.CreateDefaultDisplayNodes()
        added.append(node.GetDisplayNode())
        _copyDisplay(referenceNode.GetDisplayNode(), node.GetDisplayNode())
        _placeBeside(slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene), referenceNode, node)
        return node
    except BaseException:
        _removeNodes(scene, reversed(added))
        raise


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


def addMetricsTableNode(referenceNode, nodesByMethod: Dict[str, object], name: str):
    """A new, locked ``vtkMRMLTableNode`` ``name`` in the reference's scene with one row per method (columns method,
    PSNR, SSIM, NRMSE): each node of ``nodesByMethod`` scored against ``referenceNode`` as
    :func:`MedSRLib.apps.compare.scores_against_reference` does. A node on another grid than the reference is one
    sentence (InputError), and no table is added."""
    import vtk

    scores = scores_against_reference({method: volumeFromNode(node, copy=False)
                                       for method, node in nodesByMethod.items()},
                                      volumeFromNode(referenceNode, copy=False))
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
    scene = referenceNode.GetScene()
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


class VolumeNodeJob(SuperResolveJob):
    """:class:`~MedSRLib.apps.process.SuperResolveJob` from a scalar volume node to new nodes beside it, one step per
    ``poll()`` (the MedSR panel drives it from a timer).

    The input's voxels are written for the background process straight from the node, a slab per poll. In the last
    step the result (with ``compare_bspline`` the cubic B-spline comparison, with ``difference_to_bspline`` the
    difference result − B-spline, named after the result and shown by :func:`showAsDifference`) is added as by
    :func:`addVolumeNodeLike`, all or none: ``resultNodes`` maps ``"result"`` / ``"comparison"`` / ``"difference"``
    to them. Removing
    the input node or closing its scene stops the job at once (the child is killed) with one message; on every end
    but DONE the scene is left as it was.
    """

    def __init__(self, inputNode, method: str = "bspline", scale=2, options: Optional[dict] = None, *,
                 outputName: Optional[str] = None, **jobOptions):
        super().__init__(None, method, scale, options, **jobOptions)
        self.inputNode = inputNode
        self.outputName = outputName
        self.resultNodes: Dict[str, object] = {}
        self._scene = None
        self._observerTags = []

    def _begin(self) -> None:
        scene = self.inputNode.GetScene() if self.inputNode is not None else None
        if scene is None:
            raise InputError("Select an input volume that is in the scene.")
        self.volume = volumeFromNode(self.inputNode, copy=False)
        self._scene = scene
        self._observerTags = [scene.AddObserver(scene.StartCloseEvent, self._onSceneClosing),
                              scene.AddObserver(scene.NodeRemovedEvent, self._onNodeRemoved)]
        super()._begin()

    def _onSceneClosing(self, caller, event) -> None:
        self.cancel(SCENE_CLOSED_MESSAGE)

    def _onNodeRemoved(self, caller, event) -> None:
        if not self._scene.IsNodePresent(self.inputNode):
            self.cancel(INPUT_REMOVED_MESSAGE)

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
        except BaseException:
            _removeNodes(self._scene, [part for node in reversed(added) for part in (node, node.GetDisplayNode())])
            raise
        self.resultNodes = dict(zip(self.output_names, added))

    def done_message(self) -> str:
        return f"Done: {self.resultNodes[RESULT].GetName()}"

    def _end(self, state: JobState, message: str) -> None:
        super()._end(state, message)
        for tag in self._observerTags:
            self._scene.RemoveObserver(tag)
        self._observerTags = []
