"""MedSR: deep-learning super-resolution of MRI and CT volumes in 3D Slicer.

The module stays thin: geometry and scene handling live in ``MedSRLib.mrml``, the background process in
``MedSRLib.process`` (run with PythonSlicer so Slicer stays responsive), methods and models come from the library's
registry and catalog.
"""
import importlib.util
import os
import shutil
import sys
import tempfile
import time

import qt
import slicer
import vtk
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)

try:
    import MedSRLib  # noqa: F401  (installed beside this module)
except ModuleNotFoundError:
    # Running from a source checkout: MedSRLib is the module folder's sibling.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Import name → pip requirement of what MedSRLib needs beyond Slicer's own numpy and SimpleITK.
LIBRARY_REQUIREMENTS = {"scipy": "scipy", "skimage": "scikit-image", "safetensors": "safetensors>=0.4",
                        "tqdm": "tqdm"}
DEVICES = ("auto", "cuda", "mps", "cpu")
# The torch MedSR is tested with, pinned in every install path (pyproject, CI, here); PyTorchUtils picks the CUDA build.
TORCH_REQUIREMENT = "==2.13.0"
METRIC_ROWS = (("psnr", "PSNR (dB)"), ("psnr_foreground", "PSNR foreground (dB)"), ("ssim", "SSIM"),
               ("nrmse", "NRMSE"))
COMPARE_LAYOUT_ID = 50721  # any number unused by Slicer's built-in layouts
COMPARE_VIEW_NAMES = ("Red", "Yellow", "Green")
# The slice orientation that shows a thick axis (dominant RAS axis R, A or S) in-plane, so its gain is visible.
ORIENTATION_SHOWING_AXIS = ("Axial", "Sagittal", "Coronal")


class MedSR(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MedSR"
        self.parent.categories = ["Filtering"]
        self.parent.dependencies = []
        self.parent.contributors = ["MedSR contributors"]
        self.parent.helpText = (
            "Super-resolve an MRI or CT volume with interpolation baselines or learned networks (3D patch, 2D slice and "
            "per-scan self-supervised methods). Choose the input, the method and the scale per axis (the thick axis is "
            "pre-filled from the spacing), then click Super-resolve. Processing runs in a background process and can be "
            "cancelled. See the <a href='https://github.com/medsr/MedSR'>MedSR documentation</a>.")
        self.parent.acknowledgementText = (
            "MedSR implements published super-resolution methods (three-player GAN, TransMRSR, MIASSR/RDST, CLADE); "
            "see the README for the references.")


def missingRequirements():
    """pip requirements of MedSRLib that this Python lacks."""
    return [requirement for module, requirement in LIBRARY_REQUIREMENTS.items()
            if importlib.util.find_spec(module) is None]


def installRequirements(requirements):
    """pip-install ``requirements`` without letting pip replace Slicer's numpy or SimpleITK."""
    import numpy
    import SimpleITK
    folder = tempfile.mkdtemp(prefix="medsr-pip-")
    try:
        constraints = os.path.join(folder, "constraints.txt")
        with open(constraints, "w") as handle:
            handle.write(f"numpy=={numpy.__version__}\nSimpleITK=={SimpleITK.Version.VersionString()}\n")
        slicer.util.pip_install(["-c", constraints, *requirements])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def ensurePyTorch():
    """Make torch importable through the PyTorch extension, asking before the (large) download."""
    from MedSRLib.errors import MedSRError
    try:
        import PyTorchUtils
    except ModuleNotFoundError:
        raise MedSRError("Learned methods need PyTorch: install the PyTorch extension from the Extensions Manager, "
                         "restart Slicer and try again.") from None
    torchLogic = PyTorchUtils.PyTorchUtilsLogic()
    if not torchLogic.torchInstalled() and torchLogic.installTorch(
            askConfirmation=True, torchVersionRequirement=TORCH_REQUIREMENT) is None:
        raise MedSRError("Learned methods need PyTorch, whose installation was declined; choose an interpolation "
                         "method or click Super-resolve again to install it.")


def availableDevices():
    """The devices of DEVICES this computer can use ('auto' and 'cpu' always; GPUs only with PyTorch installed)."""
    available = {"auto", "cpu"}
    if importlib.util.find_spec("torch") is not None:
        import torch
        if torch.cuda.is_available():
            available.add("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            available.add("mps")
    return available


def methodChoices():
    """(label, method, checkpoint, description, default scale or None) for every registered method and every catalog
    model."""
    from MedSRLib import list_methods
    choices = [(info["name"], info["name"], None, f"{info['description']} Scales: {info['scales']}.", None)
               for info in list_methods()]
    from MedSRLib.models.catalog import list_models
    for model in list_models():
        description = (f"{model.description} Modality: {model.modality}, contrast: {model.contrast}, trained on "
                       f"{model.domain}. Scales: {model.scales.describe()}.")
        choices.append((f"{model.name} ({model.method})", model.method, model.name, description,
                        model.scales.default()))
    return choices


class MedSRWidget(ScriptedLoadableModuleWidget):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        self.logic = None
        self.ui = None
        self.choices = []
        self.running = False
        self.cancelRequested = False

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedSR.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedSRLogic()

        missing = missingRequirements()
        if missing and not self.logic.installRequirementsWithConfirmation(missing):
            self.ui.methodDescriptionLabel.text = (f"MedSR needs the Python packages {', '.join(missing)}; reload the "
                                                   "module to install them.")
            self.ui.applyButton.enabled = False
            return

        self.choices = methodChoices()
        for label, *_ in self.choices:
            self.ui.methodComboBox.addItem(label)
        self.populateDevices()

        self.ui.inputSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onInputChanged)
        self.ui.methodComboBox.connect("currentIndexChanged(int)", self.onMethodChanged)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.nearestDisplayCheckBox.connect("toggled(bool)", self.onNearestDisplayToggled)
        self.onMethodChanged(self.ui.methodComboBox.currentIndex)
        self.onInputChanged(self.ui.inputSelector.currentNode())

    def populateDevices(self):
        available = availableDevices()
        model = self.ui.deviceComboBox.model()
        for index, device in enumerate(DEVICES):
            self.ui.deviceComboBox.addItem(device)
            if device not in available:
                model.item(index).setEnabled(False)
                model.item(index).setToolTip(f"No {device} device is available (or PyTorch is not installed yet).")

    def currentChoice(self):
        index = self.ui.methodComboBox.currentIndex
        return self.choices[index] if 0 <= index < len(self.choices) else None

    def onMethodChanged(self, index):
        choice = self.currentChoice()
        if choice is None:
            return
        _, _, _, description, scale = choice
        self.ui.methodDescriptionLabel.text = description
        if scale:
            self.setScale(scale)

    def onInputChanged(self, inputNode):
        self.ui.applyButton.enabled = inputNode is not None and not self.running
        if inputNode is None:
            return
        from MedSRLib.grid.geometry import detect_thick_axis
        thick = detect_thick_axis(inputNode.GetSpacing())
        if thick is None:
            self.ui.thickAxisLabel.text = "Isotropic input: the same factor on every axis."
            self.setScale((2.0, 2.0, 2.0))
        else:
            self.ui.thickAxisLabel.text = f"Thick axis: {'IJK'[thick.axis]}, factor {thick.factor:g} (from spacing)."
            self.setScale(thick.scale())

    def setScale(self, scale):
        for spinBox, value in zip((self.ui.scaleXSpinBox, self.ui.scaleYSpinBox, self.ui.scaleZSpinBox), scale):
            spinBox.value = value

    def scale(self):
        return (self.ui.scaleXSpinBox.value, self.ui.scaleYSpinBox.value, self.ui.scaleZSpinBox.value)

    def runOptions(self):
        """The advanced options, leaving out those left at 'method default'."""
        options = {"blend": self.ui.blendComboBox.currentText, "batch_size": self.ui.batchSpinBox.value,
                   "device": self.ui.deviceComboBox.currentText}
        if self.ui.patchSpinBox.value > 0:
            options["patch"] = self.ui.patchSpinBox.value
        if self.ui.strideSpinBox.value > 0:
            options["stride"] = self.ui.strideSpinBox.value
        return options

    def onApplyButton(self):
        if self.running:
            self.cancelRequested = True
            self.ui.applyButton.enabled = False
            self.appendLog("Cancelling…")
            return
        inputNode = self.ui.inputSelector.currentNode()
        _, method, checkpoint, _, _ = self.currentChoice()
        self.running, self.cancelRequested = True, False
        self.ui.applyButton.text = "Cancel"
        self.ui.progressBar.value = 0
        self.ui.logTextEdit.clear()
        started = time.monotonic()
        from MedSRLib.errors import Cancelled, MedSRError
        try:
            resultNode = self.logic.process(
                inputNode, method, self.scale(), checkpoint=checkpoint,
                progress=lambda done, total: self.showProgress(done, total, started),
                log=self.appendLog, cancel=lambda: self.cancelRequested, **self.runOptions())
            self.showResult(inputNode, resultNode)
        except Cancelled:
            self.ui.etaLabel.text = "Cancelled; nothing was added to the scene."
        except MedSRError as error:
            self.ui.etaLabel.text = "Failed; see the message."
            slicer.util.errorDisplay(str(error), windowTitle="MedSR")
        finally:
            self.running = False
            self.ui.applyButton.text = "Super-resolve"
            self.ui.applyButton.enabled = True

    def showProgress(self, done, total, started):
        from MedSRLib.apps.process import estimate_remaining_seconds, format_duration
        self.ui.progressBar.maximum = max(total, 1)
        self.ui.progressBar.value = done
        remaining = estimate_remaining_seconds(time.monotonic() - started, done, total)
        self.ui.etaLabel.text = f"{done}/{total}, about {format_duration(remaining)} left"

    def appendLog(self, line):
        self.ui.logTextEdit.appendPlainText(line)

    def showResult(self, inputNode, resultNode):
        self.ui.etaLabel.text = f"Done: {resultNode.GetName()}"
        shown = [inputNode, resultNode]
        if self.ui.compareCheckBox.checked and self.ui.bsplineViewCheckBox.checked \
                and resultNode.GetAttribute("MedSR.method") != "bspline":
            shown.insert(1, self.logic.process(inputNode, "bspline", self.scale(), background=False))
        if self.ui.compareCheckBox.checked:
            self.logic.showSideBySide(shown)
        else:
            slicer.util.setSliceViewerLayers(background=resultNode, fit=True)
        self.onNearestDisplayToggled(self.ui.nearestDisplayCheckBox.checked)
        referenceNode = self.ui.referenceSelector.currentNode()
        if referenceNode is not None:
            self.showMetrics({node.GetName(): self.logic.metrics(node, referenceNode) for node in shown[1:]})

    def showMetrics(self, metricsByName):
        table = self.ui.metricsTable
        table.setRowCount(len(METRIC_ROWS))
        table.setColumnCount(len(metricsByName))
        table.setVerticalHeaderLabels([label for _, label in METRIC_ROWS])
        table.setHorizontalHeaderLabels(list(metricsByName))
        for column, metrics in enumerate(metricsByName.values()):
            for row, (key, _) in enumerate(METRIC_ROWS):
                table.setItem(row, column, qt.QTableWidgetItem(f"{metrics[key]:.4g}"))
        table.visible = True

    def onNearestDisplayToggled(self, nearest):
        inputNode = self.ui.inputSelector.currentNode()
        if inputNode is not None and inputNode.GetDisplayNode() is not None:
            inputNode.GetDisplayNode().SetInterpolate(not nearest)


class MedSRLogic(ScriptedLoadableModuleLogic):
    """What the panel does, callable from the Python console and tests without the panel."""

    def installRequirementsWithConfirmation(self, requirements):
        """Ask (unless testing), then install; False when declined or failed."""
        if not slicer.app.commandOptions().testingEnabled and not slicer.util.confirmOkCancelDisplay(
                f"MedSR needs the Python packages {', '.join(requirements)}. Install them now?"):
            return False
        try:
            with slicer.util.WaitCursor():
                installRequirements(requirements)
        except Exception as error:
            slicer.util.errorDisplay(f"Installing MedSR's Python packages failed ({error}).", windowTitle="MedSR")
            return False
        return True

    def process(self, inputNode, method, scale, checkpoint=None, background=True, progress=None, log=None,
                cancel=None, **options):
        """Super-resolve ``inputNode``; return the new volume node (the scene is unchanged on error or cancel).

        With ``background`` the work runs in a PythonSlicer process and Slicer keeps processing events meanwhile.
        """
        from MedSRLib.methods import get_method
        from MedSRLib.apps.mrml import superResolveVolumeNode
        if get_method(method).kind.value != "interpolation":
            ensurePyTorch()
        if checkpoint is not None:
            options["checkpoint"] = checkpoint
        if background:
            options["superResolve"] = self.backgroundSuperResolve(log)
        return superResolveVolumeNode(inputNode, method, scale, progress=progress, cancel=cancel, **options)

    @staticmethod
    def backgroundSuperResolve(log=None):
        import functools
        from MedSRLib.errors import MedSRError
        from MedSRLib.apps.process import super_resolve_in_subprocess
        python = shutil.which("PythonSlicer")
        if python is None:
            raise MedSRError("PythonSlicer was not found next to Slicer; reinstall Slicer or run without background.")
        return functools.partial(super_resolve_in_subprocess, python=python, log=log, idle=slicer.app.processEvents)

    @staticmethod
    def metrics(resultNode, referenceNode):
        """PSNR, SSIM and NRMSE of a result against a reference on the same grid, both normalised by the reference."""
        from MedSRLib.grid.intensity import Normaliser
        from MedSRLib.evaluation.metrics import compare
        from MedSRLib.apps.mrml import volumeFromNode
        result, reference = volumeFromNode(resultNode), volumeFromNode(referenceNode)
        normaliser = Normaliser.fit(reference.array, clip=True)
        return compare(normaliser.forward(result.array), normaliser.forward(reference.array))

    @staticmethod
    def showSideBySide(volumeNodes):
        """One slice view per volume in a row, slices linked, showing the thick axis in-plane when there is one."""
        import numpy as np
        from MedSRLib.grid.geometry import detect_thick_axis
        layoutManager = slicer.app.layoutManager()
        views = COMPARE_VIEW_NAMES[:len(volumeNodes)]
        layoutNode = layoutManager.layoutLogic().GetLayoutNode()
        description = "<layout type=\"horizontal\">" + "".join(
            f"<item><view class=\"vtkMRMLSliceNode\" singletontag=\"{name}\"></view></item>" for name in views) \
            + "</layout>"
        layoutId = COMPARE_LAYOUT_ID + len(views)
        if layoutNode.IsLayoutDescription(layoutId):
            layoutNode.SetLayoutDescription(layoutId, description)
        else:
            layoutNode.AddLayoutDescription(layoutId, description)
        layoutManager.setLayout(layoutId)

        orientation = "Coronal"
        thick = detect_thick_axis(volumeNodes[0].GetSpacing())
        if thick is not None:
            directions = np.zeros((3, 3))
            volumeNodes[0].GetIJKToRASDirections(directions)
            orientation = ORIENTATION_SHOWING_AXIS[int(np.argmax(np.abs(directions[:, thick.axis])))]
        for name, volumeNode in zip(views, volumeNodes):
            sliceWidget = layoutManager.sliceWidget(name)
            sliceWidget.mrmlSliceNode().SetOrientation(orientation)
            composite = sliceWidget.mrmlSliceCompositeNode()
            composite.SetBackgroundVolumeID(volumeNode.GetID())
            composite.SetForegroundVolumeID(None)
            composite.SetLinkedControl(True)
            composite.SetHotLinkedControl(True)
            sliceWidget.sliceLogic().FitSliceToAll()


class MedSRTest(ScriptedLoadableModuleTest):
    """Runs in a real Slicer (Reload and Test, or ctest): MRHead through B-spline and, if shipped, a learned model."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_BSplineOnMRHead()
        self.setUp()
        self.test_LearnedModel()

    @staticmethod
    def ijkToRAS(node):
        matrix = vtk.vtkMatrix4x4()
        node.GetIJKToRASMatrix(matrix)
        return slicer.util.arrayFromVTKMatrix(matrix)

    @staticmethod
    def nodeIDs():
        scene = slicer.mrmlScene
        return sorted(scene.GetNthNode(index).GetID() for index in range(scene.GetNumberOfNodes()))

    def assertCornerAligned(self, inputNode, resultNode, scale):
        import numpy as np
        inputDirections, resultDirections = np.zeros((3, 3)), np.zeros((3, 3))
        inputNode.GetIJKToRASDirections(inputDirections)
        resultNode.GetIJKToRASDirections(resultDirections)
        np.testing.assert_allclose(resultDirections, inputDirections, atol=1e-9)
        np.testing.assert_allclose(resultNode.GetSpacing(), np.asarray(inputNode.GetSpacing()) / scale, rtol=1e-6)
        inputShape = np.array(inputNode.GetImageData().GetDimensions())
        np.testing.assert_array_equal(resultNode.GetImageData().GetDimensions(), np.round(inputShape * scale))
        corner = np.array([-0.5, -0.5, -0.5, 1.0])
        np.testing.assert_allclose(self.ijkToRAS(resultNode) @ corner, self.ijkToRAS(inputNode) @ corner, atol=1e-6)

    def test_BSplineOnMRHead(self):
        import SampleData
        inputNode = SampleData.downloadSample("MRHead")
        self.delayDisplay("Super-resolving MRHead ×(1, 1, 2) with B-spline in the background")
        nodesBefore = slicer.mrmlScene.GetNumberOfNodes()
        resultNode = MedSRLogic().process(inputNode, "bspline", (1, 1, 2))
        self.assertCornerAligned(inputNode, resultNode, (1, 1, 2))
        self.assertEqual(resultNode.GetAttribute("MedSR.method"), "bspline")
        self.assertEqual(resultNode.GetAttribute("MedSR.scale"), "1,1,2")
        self.assertGreater(slicer.mrmlScene.GetNumberOfNodes(), nodesBefore)

        from MedSRLib.errors import Cancelled
        nodesBefore = self.nodeIDs()
        volumesBefore = slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
        with self.assertRaises(Cancelled):
            MedSRLogic().process(inputNode, "bspline", (1, 1, 2), cancel=lambda: True)
        self.assertEqual(self.nodeIDs(), nodesBefore)  # nothing added, nothing removed
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"), volumesBefore)
        self.delayDisplay("B-spline test passed")

    def test_LearnedModel(self):
        import numpy as np
        import SampleData
        choices = [choice for choice in methodChoices() if choice[2] is not None]
        if not choices:
            self.delayDisplay("No trained model in the catalog; learned-method test skipped")
            return
        _, method, checkpoint, _, scale = choices[0]
        mrHead = SampleData.downloadSample("MRHead")
        # A 48³ crop keeps a CPU run short; it keeps MRHead's directions and spacing.
        crop = slicer.util.arrayFromVolume(mrHead)[40:88, 100:148, 100:148]
        inputNode = slicer.util.addVolumeFromArray(np.array(crop), self.ijkToRAS(mrHead), "MRHead crop")
        self.delayDisplay(f"Super-resolving with {checkpoint} ({method})")
        resultNode = MedSRLogic().process(inputNode, method, scale, checkpoint=checkpoint)
        self.assertCornerAligned(inputNode, resultNode, np.asarray(scale))
        self.assertEqual(resultNode.GetAttribute("MedSR.method"), method)
        self.assertEqual(len(resultNode.GetAttribute("MedSR.checkpointSHA256")), 64)
        self.delayDisplay("Learned-method test passed")
