"""MedSR: deep-learning super-resolution of MRI and CT volumes in 3D Slicer.

The module stays thin. Every panel setting is in a parameter node (saved with the scene); the panel's rules (method
choices, which scale to show, memory advice) are in ``MedSRLib.apps.panel``; a run is a
``MedSRLib.apps.mrml.VolumeNodeJob``, whose background PythonSlicer process does the work while a QTimer advances the
job one short step at a time, so Slicer never waits. Nothing here imports torch: devices and free memory are probed in
the background process.
"""
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from typing import Annotated

import ctk
import qt
import slicer
import vtk
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

try:
    import MedSRLib  # noqa: F401  (installed beside this module)
except ModuleNotFoundError:
    # Running from a source checkout: MedSRLib is the module folder's sibling.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Import name → pip requirement of what MedSRLib needs beyond Slicer's own numpy and SimpleITK.
LIBRARY_REQUIREMENTS = {"scipy": "scipy", "skimage": "scikit-image", "safetensors": "safetensors>=0.4",
                        "tqdm": "tqdm"}
DEVICES = ("auto", "cuda", "mps", "cpu")
# MedSRLib.engine.backends.BACKENDS, spelled out because this module loads before MedSRLib's requirements may be
# installed (a test checks that the two agree); "openvino" is shown only where the background process can import it.
BACKENDS = ("auto", "torch", "openvino")
BLENDS = ("gaussian", "average", "crop-margin")
# What Super-resolve runs on: the input volume, the volumes checked in "Volumes", or every volume of the sequence whose
# browser shows the input.
APPLY_TO_INPUT, APPLY_TO_CHECKED, APPLY_TO_SEQUENCE = "input volume", "checked volumes", "every volume of its sequence"
APPLY_TO = (APPLY_TO_INPUT, APPLY_TO_CHECKED, APPLY_TO_SEQUENCE)
# The torch MedSR is tested with, pinned in every install path (pyproject, CI, here); PyTorchUtils picks the CUDA build.
TORCH_REQUIREMENT = "==2.13.0"
COMPARE_LAYOUT_ID = 50721  # any number unused by Slicer's built-in layouts
# Input, B-spline, result, difference: at most four views; "Slice4" is Slicer's name for a fourth slice view.
COMPARE_VIEW_NAMES = ("Red", "Yellow", "Green", "Slice4")
# The slice orientation that shows a thick axis (dominant RAS axis R, A or S) in-plane, so its gain is visible.
ORIENTATION_SHOWING_AXIS = ("Axial", "Sagittal", "Coronal")
JOB_POLL_INTERVAL_MS = 20
PROBE_POLL_INTERVAL_MS = 200
# Settings that change a run's memory need are probed this long after the last change.
ESTIMATE_DELAY_MS = 600
MEMORY_WARNING_STYLE = "color: #c05000"


class MedSR(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MedSR"
        self.parent.categories = ["Filtering"]
        self.parent.dependencies = []
        self.parent.contributors = ["MedSR contributors"]
        self.parent.helpText = (
            "Super-resolve an MRI or CT volume with interpolation baselines or learned networks (3D patch, 2D slice and "
            "per-scan self-supervised methods). Choose the input, the method and the scale per axis (a model's own "
            "scale or the thick axis is suggested; a scale you set is kept) or a target spacing in mm, then click "
            "Super-resolve, for the input, several checked volumes or every volume of the input's sequence. The work "
            "runs in a background process with progress and Cancel; the settings are saved with the scene. The "
            "compare view can add the difference to cubic B-spline, zoom every view together "
            "and, given a reference on the result's grid, a table of PSNR, SSIM and NRMSE. The README of the MedSR "
            "source describes the methods and their measured gains.")
        self.parent.acknowledgementText = (
            "MedSR implements published super-resolution methods (three-player GAN, TransMRSR, MIASSR/RDST, CLADE); "
            "see the README for the references.")


@parameterNodeWrapper
class MedSRParameterNode:
    """Every panel setting. ``method`` is a MedSRLib.apps.panel.MethodChoice key (a method or a catalog model);
    ``suggestedScale`` is the scale the panel last filled in itself ("x,y,z"), so any other scale is the user's;
    ``methodOptions`` the "Method options" values set, as JSON (MedSRLib.apps.panel.parse_stored_options);
    ``targetSpacing`` (mm) replaces the scale when above 0; ``differenceView`` adds a view of result − B-spline;
    ``zoom`` magnifies the slice views together; ``referenceVolume`` gives the metrics table; ``applyTo`` says
    whether a run takes the input, the ``checkedVolumes`` or every volume of the input's sequence."""
    inputVolume: slicer.vtkMRMLScalarVolumeNode
    applyTo: Annotated[str, Choice(APPLY_TO)] = APPLY_TO_INPUT
    checkedVolumes: list[slicer.vtkMRMLScalarVolumeNode]
    method: str = "bspline"
    methodOptions: str = "{}"
    scaleX: Annotated[float, WithinRange(1.0, 8.0)] = 2.0
    scaleY: Annotated[float, WithinRange(1.0, 8.0)] = 2.0
    scaleZ: Annotated[float, WithinRange(1.0, 8.0)] = 2.0
    suggestedScale: str = ""
    targetSpacing: Annotated[float, WithinRange(0.0, 100.0)] = 0.0
    patch: Annotated[int, WithinRange(0, 512)] = 0
    stride: Annotated[int, WithinRange(0, 512)] = 0
    blend: Annotated[str, Choice(BLENDS)] = "gaussian"
    batchSize: Annotated[int, WithinRange(1, 64)] = 4
    device: Annotated[str, Choice(DEVICES)] = "auto"
    backend: Annotated[str, Choice(BACKENDS)] = "auto"
    compare: bool = True
    bsplineView: bool = False
    differenceView: bool = False
    zoom: Annotated[float, WithinRange(1.0, 16.0)] = 1.0
    nearestDisplay: bool = True
    referenceVolume: slicer.vtkMRMLScalarVolumeNode


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
    """Make torch importable in the background process through the PyTorch extension, asking before the (large)
    download. Only PyTorchUtils is imported here, never torch."""
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


def backgroundPython():
    """PythonSlicer, which runs the background process with Slicer's Python environment."""
    from MedSRLib.errors import MedSRError
    python = shutil.which("PythonSlicer")
    if python is None:
        raise MedSRError("PythonSlicer was not found next to Slicer; reinstall Slicer.")
    return python


class MedSRWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.ui = None
        self.choices = []
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._suggestionBasis = None   # (input node ID, method key) the scale was last suggested for
        self._estimateBasis = None     # the settings the memory estimate is for
        self.memoryWarning = None      # the estimate's warning for _estimateBasis, if any
        self.unavailableDevices = {}   # device → why not, from the last probe
        self.unavailableBackends = {}  # backend → why not, from the last probe (before one: the optional ones)
        self.probe = None
        self.probeBasis = None         # the settings the running probe estimates
        self.probeTimer = None
        self.estimateDelayTimer = None
        self.memoryLabel = None
        self.methodOptionsSection = None
        self.methodOptionsForm = None
        self._methodOptionsShown = None  # (method, stored JSON) the "Method options" fields were built for
        self.applyToComboBox = None
        self.checkedVolumesComboBox = None
        self._linesShown = 0             # the lines of a many-volume run already in the log

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

        from MedSRLib.apps.panel import method_choices, unavailable_backends
        self.choices = method_choices()
        self.unavailableBackends = unavailable_backends(None)
        for choice in self.choices:
            self.ui.methodComboBox.addItem(choice.label)
        self.memoryLabel = qt.QLabel("Choose an input volume.")
        self.memoryLabel.wordWrap = True
        self.ui.inputsCollapsibleButton.layout().addRow("Memory:", self.memoryLabel)
        self.applyToComboBox = qt.QComboBox()
        self.applyToComboBox.toolTip = ("Super-resolve the input volume, every volume checked below (each result "
                                        "beside its input), or every volume of the sequence the input belongs to (one "
                                        "output sequence in the same browser).")
        self.ui.inputsCollapsibleButton.layout().insertRow(1, "Apply to:", self.applyToComboBox)
        self.checkedVolumesComboBox = slicer.qMRMLCheckableNodeComboBox()
        self.checkedVolumesComboBox.nodeTypes = ["vtkMRMLScalarVolumeNode"]
        self.checkedVolumesComboBox.addEnabled = self.checkedVolumesComboBox.removeEnabled = False
        self.checkedVolumesComboBox.setMRMLScene(slicer.mrmlScene)
        self.checkedVolumesComboBox.connect("checkedNodesChanged()", self.onCheckedVolumesChanged)
        self.ui.inputsCollapsibleButton.layout().insertRow(2, "Volumes:", self.checkedVolumesComboBox)
        # Filled from the chosen method's option declarations by showMethodOptions.
        self.methodOptionsSection = ctk.ctkCollapsibleButton()
        self.methodOptionsSection.text = "Method options"
        self.methodOptionsSection.collapsed = True
        qt.QVBoxLayout(self.methodOptionsSection)
        uiWidget.layout().insertWidget(1, self.methodOptionsSection)  # below Inputs
        self.probeTimer = qt.QTimer()
        self.probeTimer.setInterval(PROBE_POLL_INTERVAL_MS)
        self.probeTimer.timeout.connect(self.pollProbe)
        self.estimateDelayTimer = qt.QTimer()
        self.estimateDelayTimer.setSingleShot(True)
        self.estimateDelayTimer.setInterval(ESTIMATE_DELAY_MS)
        self.estimateDelayTimer.timeout.connect(self.startProbe)

        self.ui.methodComboBox.connect("currentIndexChanged(int)", self.onMethodComboBoxChanged)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.nearestDisplayCheckBox.connect("toggled(bool)", self.onNearestDisplayToggled)
        self.ui.zoomSliderWidget.connect("valueChanged(double)", self.logic.zoomSliceViews)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()
        self.estimateDelayTimer.start()  # the devices (and the estimate, if there is an input) soon after opening

    def cleanup(self):
        """Called when the application closes or the module is reloaded: nothing may outlive the panel."""
        if self.logic is not None:
            self.logic.stopJob()
        for timer in (self.probeTimer, self.estimateDelayTimer):
            if timer is not None:
                timer.stop()
        if self.probe is not None:
            self.probe.cancel()
        self.removeObservers()

    def enter(self):
        if self.choices:  # empty when the required packages are missing
            self.initializeParameterNode()

    def exit(self):
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event):
        # A running job watches its scene and stops itself, with its own message, when the scene closes.
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered and self.choices:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")

    def setParameterNode(self, parameterNode):
        if self._parameterNode is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self._parameterNode = parameterNode
        if parameterNode is None:
            return
        ui = self.ui
        self._parameterNodeGuiTag = parameterNode.connectParametersToGui({
            "inputVolume": ui.inputSelector, "scaleX": ui.scaleXSpinBox, "scaleY": ui.scaleYSpinBox,
            "scaleZ": ui.scaleZSpinBox, "targetSpacing": ui.targetSpacingSpinBox, "patch": ui.patchSpinBox,
            "stride": ui.strideSpinBox, "blend": ui.blendComboBox, "batchSize": ui.batchSpinBox,
            "device": ui.deviceComboBox, "backend": ui.backendComboBox, "compare": ui.compareCheckBox,
            "bsplineView": ui.bsplineViewCheckBox, "differenceView": ui.differenceViewCheckBox,
            "zoom": ui.zoomSliderWidget, "nearestDisplay": ui.nearestDisplayCheckBox,
            "referenceVolume": ui.referenceSelector, "applyTo": self.applyToComboBox})
        self.showDeviceAvailability()  # connecting refilled the device and backend lists
        self.showBackendAvailability()
        self.addObserver(parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self.onParameterNodeModified()

    def currentChoice(self):
        from MedSRLib.apps.panel import find_choice
        return find_choice(self.choices, self._parameterNode.method) or self.choices[0]

    def onMethodComboBoxChanged(self, index):
        if self._parameterNode is not None and 0 <= index < len(self.choices):
            self._parameterNode.method = self.choices[index].key

    def onParameterNodeModified(self, caller=None, event=None):
        parameters = self._parameterNode
        choice = self.currentChoice()
        index = self.choices.index(choice)
        if self.ui.methodComboBox.currentIndex != index:
            wasBlocked = self.ui.methodComboBox.blockSignals(True)
            self.ui.methodComboBox.currentIndex = index
            self.ui.methodComboBox.blockSignals(wasBlocked)
        self.ui.methodDescriptionLabel.text = choice.description
        self.showCheckedVolumes()
        if (choice.method, parameters.methodOptions) != self._methodOptionsShown:
            self.showMethodOptions(choice.method)
        suggestionBasis = (parameters.inputVolume.GetID() if parameters.inputVolume else None, choice.key,
                           parameters.targetSpacing)
        if suggestionBasis != self._suggestionBasis:
            self._suggestionBasis = suggestionBasis
            self.updateScale(choice)
        if self.estimateBasis() != self._estimateBasis:
            self.memoryLabel.text = "Estimating…" if parameters.inputVolume else "Choose an input volume."
            self.memoryLabel.styleSheet = ""
            self.memoryWarning = None
            self.estimateDelayTimer.start()
        self.updateApplyButton()

    def showCheckedVolumes(self):
        """The "Volumes" checks follow the parameter node; the field shows only when checked volumes are run."""
        box = self.checkedVolumesComboBox
        box.visible = self._parameterNode.applyTo == APPLY_TO_CHECKED
        checked = {node.GetID() for node in self._parameterNode.checkedVolumes if node is not None}
        wasBlocked = box.blockSignals(True)
        for index in range(box.nodeCount()):
            node = box.nodeFromIndex(index)
            box.setCheckState(node, qt.Qt.Checked if node.GetID() in checked else qt.Qt.Unchecked)
        box.blockSignals(wasBlocked)

    def onCheckedVolumesChanged(self):
        if self._parameterNode is not None:
            self._parameterNode.checkedVolumes = list(self.checkedVolumesComboBox.checkedNodes())

    def updateScale(self, choice):
        """Show the model's scale or the input's thick-axis guess, unless the user set a scale of their own; a target
        spacing replaces the scale fields (disabled) and says what scale it gives."""
        from MedSRLib.apps.panel import (format_stored_scale, parse_stored_scale, suggest_scale,
                                         target_spacing_note, update_scale)
        parameters = self._parameterNode
        spacing = parameters.inputVolume.GetSpacing() if parameters.inputVolume else None
        update = update_scale(self.scale(), parse_stored_scale(parameters.suggestedScale),
                              suggest_scale(choice, spacing))
        with slicer.util.NodeModify(parameters):
            parameters.scaleX, parameters.scaleY, parameters.scaleZ = update.scale
            parameters.suggestedScale = format_stored_scale(update.suggested)
        self.ui.scaleWidget.enabled = parameters.targetSpacing <= 0
        self.ui.thickAxisLabel.text = update.note if parameters.targetSpacing <= 0 else \
            target_spacing_note(parameters.targetSpacing, spacing)

    def showMethodOptions(self, method):
        """Rebuild the "Method options" fields from ``method``'s declarations, showing the stored values."""
        from MedSRLib.apps.panel import option_fields, parse_stored_options
        stored = parse_stored_options(self._parameterNode.methodOptions)
        self._methodOptionsShown = (method, self._parameterNode.methodOptions)
        if self.methodOptionsForm is not None:
            self.methodOptionsForm.deleteLater()
        self.methodOptionsForm = qt.QWidget()
        form = qt.QFormLayout(self.methodOptionsForm)
        fields = option_fields(method)
        for field in fields:
            form.addRow(f"{field.label}:", self.optionWidget(field, field.shown(stored)))
        self.methodOptionsSection.layout().addWidget(self.methodOptionsForm)
        self.methodOptionsSection.visible = bool(fields)

    def optionWidget(self, field, value):
        """The widget of one MedSRLib.apps.panel.OptionField showing ``value``; each change is stored."""
        store = lambda newValue: self.setMethodOption(field.name, newValue)  # noqa: E731
        if field.kind == "bool":
            widget = qt.QCheckBox()
            widget.checked = value
            widget.connect("toggled(bool)", store)
        elif field.kind == "choice":
            widget = qt.QComboBox()
            widget.addItems(list(field.choices))
            widget.currentIndex = field.choices.index(value)
            widget.connect("currentIndexChanged(int)", lambda index: store(field.choices[index]))
        elif field.kind == "path":
            widget = qt.QLineEdit()
            widget.text = value
            widget.placeholderText = field.default_text
            widget.connect("textChanged(QString)", store)
        else:
            widget = qt.QSpinBox() if field.kind == "int" else qt.QDoubleSpinBox()
            if field.kind == "float":
                widget.decimals = field.decimals
            widget.setRange(field.minimum, field.maximum)
            widget.specialValueText = field.default_text  # shown at the minimum: the method's own value
            widget.value = value
            widget.connect("valueChanged(int)" if field.kind == "int" else "valueChanged(double)", store)
        widget.toolTip = field.tooltip
        return widget

    def setMethodOption(self, name, value):
        from MedSRLib.apps.panel import store_option
        if self._parameterNode is None:
            return
        text = store_option(self._parameterNode.methodOptions, name, value)
        self._methodOptionsShown = (self._methodOptionsShown[0], text)  # the fields show it already: no rebuild
        self._parameterNode.methodOptions = text

    def scale(self):
        return (self._parameterNode.scaleX, self._parameterNode.scaleY, self._parameterNode.scaleZ)

    def runOptions(self):
        from MedSRLib.apps.panel import run_options
        parameters = self._parameterNode
        return run_options(parameters.patch, parameters.stride, parameters.blend, parameters.batchSize,
                           parameters.device, parameters.backend)

    def updateApplyButton(self):
        running = self.logic.job is not None and self.logic.job.active
        self.ui.applyButton.text = "Cancel" if running else "Super-resolve"
        parameters = self._parameterNode
        self.ui.applyButton.enabled = running or (parameters is not None and bool(
            parameters.checkedVolumes if parameters.applyTo == APPLY_TO_CHECKED else parameters.inputVolume))

    # --- devices and memory, probed in the background process ---------------------------------------------------

    def estimateBasis(self):
        inputVolume = self._parameterNode.inputVolume
        if inputVolume is None or inputVolume.GetImageData() is None:
            return None
        return (inputVolume.GetID(), inputVolume.GetImageData().GetDimensions(), self.currentChoice().key,
                self.scale(), self._parameterNode.targetSpacing, tuple(sorted(self.runOptions().items())))

    def startProbe(self):
        """Probe the devices, with the memory estimate of the current settings when there is an input."""
        from MedSRLib.apps.panel import estimate_request, run_scale
        from MedSRLib.apps.process import DeviceProbe
        from MedSRLib.errors import MedSRError
        if self.probe is not None:
            self.probe.cancel()
        parameters = self._parameterNode
        basis = self.estimateBasis() if parameters is not None else None
        request = None
        try:
            if basis is not None:
                shape = tuple(reversed(parameters.inputVolume.GetImageData().GetDimensions()))
                scale = run_scale(self.scale(), parameters.targetSpacing, parameters.inputVolume.GetSpacing())
                request = estimate_request(self.currentChoice(), shape, scale, self.runOptions())
            self.probe = DeviceProbe(request, python=backgroundPython())
            self.probe.start()
        except (MedSRError, OSError) as error:  # the panel still works; only the estimate is missing
            self.probe = None
            self.memoryLabel.text = f"No estimate ({error})."
            return
        self.probeBasis = basis
        self.probeTimer.start()

    def pollProbe(self):
        from MedSRLib.apps.panel import memory_advice, unavailable_backends, unavailable_devices
        if self.probe is None or not self.probe.poll():
            return
        self.probeTimer.stop()
        probe, self.probe = self.probe, None
        if probe.report is None:
            self.memoryLabel.text = f"No estimate ({probe.error})."
            return
        self.unavailableDevices = unavailable_devices(probe.report)
        self.unavailableBackends = unavailable_backends(probe.report)
        self.showDeviceAvailability()
        self.showBackendAvailability()
        if self.probeBasis is not None and self.probeBasis == self.estimateBasis():
            text, warning = memory_advice(probe.report)
            self._estimateBasis = self.probeBasis
            self.memoryWarning = text if warning else None
            self.memoryLabel.text = text
            self.memoryLabel.styleSheet = MEMORY_WARNING_STYLE if warning else ""

    def showDeviceAvailability(self):
        model = self.ui.deviceComboBox.model()
        for index, device in enumerate(DEVICES):
            reason = self.unavailableDevices.get(device)
            model.item(index).setEnabled(reason is None)
            model.item(index).setToolTip(f"Not available: {reason}." if reason else "")

    def showBackendAvailability(self):
        """Only the backends the background process can import are listed."""
        view = self.ui.backendComboBox.view()
        for index, backend in enumerate(BACKENDS):
            view.setRowHidden(index, backend in self.unavailableBackends)

    # --- running ------------------------------------------------------------------------------------------------

    def onApplyButton(self):
        from MedSRLib.apps.panel import method_run_options, parse_stored_options, scale_or_target_spacing
        from MedSRLib.errors import MedSRError
        if self.logic.job is not None and self.logic.job.active:
            self.logic.job.cancel()
            return
        parameters = self._parameterNode
        choice = self.currentChoice()
        if self.memoryWarning is not None and self.estimateBasis() == self._estimateBasis \
                and not slicer.app.commandOptions().testingEnabled \
                and not slicer.util.confirmOkCancelDisplay(f"{self.memoryWarning}\n\nRun anyway?", windowTitle="MedSR"):
            return
        self.ui.logTextEdit.clear()
        self.ui.metricsTableView.visible = False
        self.ui.metricsNoteLabel.text = ""
        self._linesShown = 0
        try:
            methodOptions = method_run_options(choice.method, parse_stored_options(parameters.methodOptions))
            scale, scaleOptions = scale_or_target_spacing(self.scale(), parameters.targetSpacing)
            options = {"checkpoint": choice.checkpoint, "log": self.appendLog, "onUpdate": self.onJobUpdate,
                       **self.runOptions(), **scaleOptions, **methodOptions}
            if parameters.applyTo == APPLY_TO_CHECKED:
                self.logic.startVolumesJob(parameters.checkedVolumes, choice.method, scale, **options)
            elif parameters.applyTo == APPLY_TO_SEQUENCE:
                self.logic.startSequenceJob(parameters.inputVolume, choice.method, scale, **options)
            else:
                self.logic.startJob(parameters.inputVolume, choice.method, scale,
                                    compareBSpline=parameters.compare and parameters.bsplineView,
                                    differenceToBSpline=parameters.compare and parameters.differenceView,
                                    referenceNode=parameters.referenceVolume, **options)
        except MedSRError as error:
            slicer.util.errorDisplay(str(error), windowTitle="MedSR")

    def onJobUpdate(self, job):
        from MedSRLib.apps.mrml import SequenceJob, VolumeNodesJob
        from MedSRLib.apps.process import JobState
        done, total = job.progress
        self.ui.progressBar.maximum = max(total, 1)
        self.ui.progressBar.value = done if job.active else self.ui.progressBar.maximum
        self.ui.etaLabel.text = job.status_text()
        for line in getattr(job, "lines", [])[self._linesShown:]:  # one line per volume of a many-volume run
            self.appendLog(line)
            self._linesShown += 1
        self.updateApplyButton()
        if job.state == JobState.DONE:
            if isinstance(job, VolumeNodesJob):
                slicer.util.setSliceViewerLayers(background=list(job.resultNodes.values())[-1], fit=True)
            elif isinstance(job, SequenceJob):
                slicer.util.setSliceViewerLayers(background=job.outputProxy, fit=True)
            else:
                self.showResult(job)
        elif job.state == JobState.FAILED:
            slicer.util.errorDisplay(job.message, windowTitle="MedSR")

    def appendLog(self, line):
        self.ui.logTextEdit.appendPlainText(line)

    def showResult(self, job):
        from MedSRLib.apps.mrml import METRICS
        from MedSRLib.apps.process import COMPARISON, DIFFERENCE, RESULT
        parameters = self.logic.getParameterNode()  # the panel may have been left while the job ran
        inputNode, resultNode = job.inputNode, job.resultNodes[RESULT]
        comparisonNode, differenceNode = job.resultNodes.get(COMPARISON), job.resultNodes.get(DIFFERENCE)
        if parameters.compare:
            shown = [inputNode, comparisonNode if parameters.bsplineView else None, resultNode, differenceNode]
            self.logic.showSideBySide([node for node in shown if node is not None])
        else:
            slicer.util.setSliceViewerLayers(background=resultNode, fit=True)
        self.logic.zoomSliceViews(parameters.zoom)
        self.logic.setNearestDisplay(inputNode, parameters.nearestDisplay)
        if job.referenceNode is None:
            return
        table = job.resultNodes.get(METRICS)
        if table is None:  # e.g. the reference is on another grid: one sentence instead of the table
            self.ui.metricsNoteLabel.text = job.metrics_error
            return
        self.ui.metricsNoteLabel.text = f"Against {job.referenceNode.GetName()} (table {table.GetName()}):"
        self.ui.metricsTableView.setMRMLTableNode(table)
        self.ui.metricsTableView.visible = True

    def onNearestDisplayToggled(self, nearest):
        if self._parameterNode is not None:
            self.logic.setNearestDisplay(self._parameterNode.inputVolume, nearest)


class MedSRLogic(ScriptedLoadableModuleLogic):
    """What the panel does, callable from the Python console and tests without the panel."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.job = None
        self._jobTimer = None
        self._onJobUpdate = None

    def getParameterNode(self):
        return MedSRParameterNode(super().getParameterNode())

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

    def startJob(self, inputNode, method, scale, checkpoint=None, compareBSpline=False, differenceToBSpline=False,
                 referenceNode=None, log=None, onUpdate=None, **options):
        """Start super-resolving ``inputNode`` in a background process (``scale`` None when ``options`` give a
        ``target_spacing``) and return the ``MedSRLib.apps.mrml.VolumeNodeJob`` at once; a QTimer advances it and
        calls ``onUpdate(job)`` after each step. On DONE, ``job.resultNodes["result"]`` is the new volume (with
        ``compareBSpline`` also ``"comparison"``, with ``differenceToBSpline`` ``"difference"``, result − B-spline,
        with a ``referenceNode`` ``"metrics"``, the table of the scores the background process computed, unless
        ``job.metrics_error`` says why not); on CANCELLED or FAILED the scene is as it was and ``job.message`` says
        why."""
        from MedSRLib.apps.mrml import VolumeNodeJob
        return self._start(lambda **jobOptions: VolumeNodeJob(
            inputNode, method, scale, options, compare_bspline=compareBSpline,
            difference_to_bspline=differenceToBSpline, referenceNode=referenceNode, **jobOptions),
            method, checkpoint, options, log, onUpdate)

    def startVolumesJob(self, inputNodes, method, scale, checkpoint=None, log=None, onUpdate=None, **options):
        """As :meth:`startJob` for each of ``inputNodes`` in turn (``MedSRLib.apps.mrml.VolumeNodesJob``): each result
        beside its input (``job.resultNodes`` by input node ID), one line per volume in ``job.lines``; a failed volume
        does not stop the others."""
        from MedSRLib.apps.mrml import VolumeNodesJob
        return self._start(lambda **jobOptions: VolumeNodesJob(inputNodes, method, scale, options, **jobOptions),
                           method, checkpoint, options, log, onUpdate)

    def startSequenceJob(self, proxyNode, method, scale, checkpoint=None, log=None, onUpdate=None, **options):
        """As :meth:`startJob` for every volume of the sequence whose browser shows ``proxyNode``
        (``MedSRLib.apps.mrml.SequenceJob``): one output sequence (``job.outputSequence``) synchronised in the same
        browser, its proxy ``job.outputProxy``; one line per item in ``job.lines``."""
        from MedSRLib.apps.mrml import SequenceJob
        return self._start(lambda **jobOptions: SequenceJob(proxyNode, method, scale, options,
                                                          sequencesLogic=slicer.modules.sequences.logic(),
                                                          **jobOptions),
                           method, checkpoint, options, log, onUpdate)

    def _start(self, makeJob, method, checkpoint, options, log, onUpdate):
        from MedSRLib.errors import MedSRError
        from MedSRLib.methods import get_method
        if self.job is not None and self.job.active:
            raise MedSRError("MedSR is already running; cancel it first.")
        if get_method(method).kind.value != "interpolation":
            ensurePyTorch()
        if checkpoint is not None:
            options["checkpoint"] = checkpoint
        self.job = makeJob(python=backgroundPython(), log=log)
        self._onJobUpdate = onUpdate
        self.job.start()
        if self._jobTimer is None:
            self._jobTimer = qt.QTimer()
            self._jobTimer.setInterval(JOB_POLL_INTERVAL_MS)
            self._jobTimer.timeout.connect(self._pollJob)
        self._jobTimer.start()
        self._pollJob()  # a job that failed at start ends here, with the same update as any other end
        return self.job

    def _pollJob(self):
        self.job.poll()
        if not self.job.active:
            self._jobTimer.stop()
        if self._onJobUpdate is not None:
            self._onJobUpdate(self.job)

    def stopJob(self):
        """Cancel the running job, if any; its child process is killed before this returns."""
        if self.job is not None and self.job.active:
            self.job.cancel()
            self._pollJob()

    @staticmethod
    def setNearestDisplay(volumeNode, nearest):
        """Show a volume's voxels as blocks (its real resolution) or interpolated."""
        if volumeNode is not None and volumeNode.GetDisplayNode() is not None:
            volumeNode.GetDisplayNode().SetInterpolate(not nearest)

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

    @staticmethod
    def zoomSliceViews(zoom):
        """Magnify every slice view that shows a volume ``zoom`` times over the whole volume, around the view's centre
        (MedSRLib.apps.compare.zoomed_field_of_view, for the volume's extent in the view's plane)."""
        from MedSRLib.apps.compare import extent_in_slice_plane, zoomed_field_of_view
        layoutManager = slicer.app.layoutManager()
        for name in COMPARE_VIEW_NAMES:
            sliceWidget = layoutManager.sliceWidget(name)
            volumeID = sliceWidget.mrmlSliceCompositeNode().GetBackgroundVolumeID() if sliceWidget else None
            volumeNode = slicer.mrmlScene.GetNodeByID(volumeID) if volumeID else None
            if volumeNode is None or volumeNode.GetImageData() is None:
                continue
            ijkToRAS = vtk.vtkMatrix4x4()
            volumeNode.GetIJKToRASMatrix(ijkToRAS)
            sliceNode = sliceWidget.mrmlSliceNode()
            extent = extent_in_slice_plane(slicer.util.arrayFromVTKMatrix(ijkToRAS),
                                           volumeNode.GetImageData().GetDimensions(),
                                           slicer.util.arrayFromVTKMatrix(sliceNode.GetSliceToRAS()))
            fieldOfViewX, fieldOfViewY = zoomed_field_of_view(extent, sliceNode.GetDimensions()[:2], zoom)
            sliceNode.SetFieldOfView(fieldOfViewX, fieldOfViewY, sliceNode.GetFieldOfView()[2])


class MedSRTest(ScriptedLoadableModuleTest):
    """Runs in a real Slicer (Reload and Test, or ctest): the logic and the panel on SampleData MRHead with B-spline,
    cancelled runs, the difference to B-spline and the metrics table, several volumes and a sequence, and, if
    shipped, a learned model."""
    TIMEOUT_S = 300

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_BSplineOnMRHead()
        self.setUp()
        self.test_DifferenceAndMetrics()
        self.setUp()
        self.test_ManyVolumesAndSequence()
        self.setUp()
        self.test_Panel()
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

    def waitWhile(self, condition):
        """Let Slicer run (the job's QTimer advances it) while ``condition()`` holds."""
        deadline = time.monotonic() + self.TIMEOUT_S
        while condition():
            self.assertLess(time.monotonic(), deadline, "the MedSR job did not finish in time")
            slicer.app.processEvents()
            time.sleep(0.01)

    def assertChildGone(self, job):
        if job.child_pid is not None:
            with self.assertRaises(OSError):
                os.kill(job.child_pid, 0)

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

    def assertCancelLeavesSceneAsItWas(self, startJob, cancelWhile):
        """Start a job, cancel it once ``cancelWhile(job)`` no longer holds, and check nothing was added."""
        from MedSRLib.apps.process import JobState
        nodesBefore = self.nodeIDs()
        job = startJob()
        self.waitWhile(lambda: job.active and cancelWhile(job))
        self.assertTrue(job.active, "the job ended before it could be cancelled")
        job.cancel()
        self.waitWhile(lambda: job.active)
        self.assertEqual(job.state, JobState.CANCELLED)
        self.assertEqual(self.nodeIDs(), nodesBefore)  # nothing added, nothing removed
        self.assertChildGone(job)

    def test_BSplineOnMRHead(self):
        import SampleData
        from MedSRLib.apps.process import JobState, RESULT
        inputNode = SampleData.downloadSample("MRHead")
        self.delayDisplay("Super-resolving MRHead ×(1, 1, 2) with B-spline in the background")
        logic = MedSRLogic()
        job = logic.startJob(inputNode, "bspline", (1, 1, 2))
        self.waitWhile(lambda: job.active)
        self.assertEqual(job.state, JobState.DONE, job.message)
        resultNode = job.resultNodes[RESULT]
        self.assertCornerAligned(inputNode, resultNode, (1, 1, 2))
        self.assertEqual(resultNode.GetAttribute("MedSR.method"), "bspline")
        self.assertEqual(resultNode.GetAttribute("MedSR.scale"), "1,1,2")
        self.assertChildGone(job)

        self.delayDisplay("Cancelling while the input is written, then while the background process runs")
        startJob = lambda: logic.startJob(inputNode, "bspline", (1, 1, 2))  # noqa: E731
        self.assertCancelLeavesSceneAsItWas(startJob, lambda job: False)
        self.assertCancelLeavesSceneAsItWas(startJob, lambda job: job.state != JobState.RUNNING)
        self.delayDisplay("B-spline test passed")

    def test_DifferenceAndMetrics(self):
        """Linear ×(1, 1, 2) with its difference to B-spline (the result's grid, result − B-spline, a diverging
        colour table centred at 0), its metrics table against a reference on the result's grid, and the one sentence
        for a reference on another grid."""
        import numpy as np
        import SampleData
        from MedSRLib.apps.compare import scores_against_reference
        from MedSRLib.apps.mrml import DIFFERENCE_COLOR_NODE_IDS, METRIC_COLUMNS, METRICS, volumeFromNode
        from MedSRLib.apps.process import COMPARISON, DIFFERENCE, JobState, RESULT
        inputNode = SampleData.downloadSample("MRHead")
        self.delayDisplay("Linear ×(1, 1, 2) with its difference to B-spline")
        job = MedSRLogic().startJob(inputNode, "linear", (1, 1, 2), compareBSpline=True, differenceToBSpline=True)
        self.waitWhile(lambda: job.active)
        self.assertEqual(job.state, JobState.DONE, job.message)
        resultNode, bsplineNode, differenceNode = (job.resultNodes[name] for name in (RESULT, COMPARISON, DIFFERENCE))
        self.assertEqual(differenceNode.GetName(), f"{resultNode.GetName()} - bspline")
        np.testing.assert_allclose(self.ijkToRAS(differenceNode), self.ijkToRAS(resultNode), atol=1e-9)
        arrays = [slicer.util.arrayFromVolume(node).astype(np.float32)
                  for node in (resultNode, bsplineNode, differenceNode)]
        np.testing.assert_allclose(arrays[2], arrays[0] - arrays[1], atol=1e-3)
        display = differenceNode.GetDisplayNode()
        self.assertEqual(display.GetColorNodeID(), DIFFERENCE_COLOR_NODE_IDS[0])
        self.assertFalse(display.GetAutoWindowLevel())
        self.assertEqual(display.GetLevel(), 0.0)
        self.assertGreater(display.GetWindow(), 0.0)

        self.delayDisplay("The metrics table against a reference on the result's grid, then on another grid")
        referenceNode = slicer.util.addVolumeFromArray(arrays[1] * 0.9 + 5.0, self.ijkToRAS(resultNode), "reference")
        job = MedSRLogic().startJob(inputNode, "linear", (1, 1, 2), referenceNode=referenceNode)
        self.waitWhile(lambda: job.active)
        self.assertEqual(job.state, JobState.DONE, job.message)
        table = job.resultNodes[METRICS]  # scored in the background process
        expected = scores_against_reference({"linear": volumeFromNode(job.resultNodes[RESULT]),
                                             "bspline": volumeFromNode(bsplineNode)}, volumeFromNode(referenceNode))
        self.assertEqual([table.GetColumnName(column) for column in range(table.GetNumberOfColumns())],
                         ["method"] + [title for title, _, _ in METRIC_COLUMNS])
        for row, method in enumerate(("linear", "bspline")):
            self.assertEqual(table.GetCellText(row, 0), method)
            for column, (_, key, _) in enumerate(METRIC_COLUMNS, start=1):
                self.assertAlmostEqual(table.GetTable().GetValue(row, column).ToDouble(), expected[method][key],
                                       places=5)
        tables = slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLTableNode")
        job = MedSRLogic().startJob(inputNode, "linear", (1, 1, 2), referenceNode=inputNode)  # the input's grid
        self.waitWhile(lambda: job.active)
        self.assertEqual(job.state, JobState.DONE, job.message)
        self.assertIn("different grids", job.metrics_error)
        self.assertNotIn(METRICS, job.resultNodes)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLTableNode"), tables)
        self.delayDisplay("Difference and metrics test passed")

    def test_ManyVolumesAndSequence(self):
        """B-spline ×(1, 1, 2) on three volumes, the middle one constant (refused by the background process) without
        stopping the others; then on every volume of a three-item sequence, into one output sequence."""
        import numpy as np
        import SampleData
        from MedSRLib.apps.process import JobState
        mrHead = SampleData.downloadSample("MRHead")
        crop = np.array(slicer.util.arrayFromVolume(mrHead)[:, :48, :48])  # keeps the runs short
        volumes = [slicer.util.addVolumeFromArray(array, self.ijkToRAS(mrHead), name) for name, array in (
            ("first", crop), ("constant", np.full_like(crop, 7)), ("last", crop[::-1].copy()))]
        self.delayDisplay("Three volumes, one failing")
        logic = MedSRLogic()
        job = logic.startVolumesJob(volumes, "bspline", (1, 1, 2))
        self.waitWhile(lambda: job.active)
        self.assertEqual((job.state, job.message), (JobState.DONE, "Done: 2 of 3 volumes super-resolved, 1 failed."))
        self.assertEqual(len(job.lines), 3)
        self.assertTrue(job.lines[1].startswith("constant: failed: "), job.lines[1])
        for node in (volumes[0], volumes[2]):
            self.assertCornerAligned(node, job.resultNodes[node.GetID()], (1, 1, 2))
        for pid in job.child_pids:
            with self.assertRaises(OSError):
                os.kill(pid, 0)

        self.delayDisplay("Every volume of a sequence")
        sequence = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSequenceNode", "cine")
        for index, array in enumerate((crop, crop * 2, crop[::-1].copy())):
            item = slicer.vtkMRMLScalarVolumeNode()
            item.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(self.ijkToRAS(mrHead)))
            slicer.util.updateVolumeFromArray(item, array)
            sequence.SetDataNodeAtValue(item, str(index))
        browser = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", "cine browser")
        browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
        slicer.modules.sequences.logic().UpdateProxyNodesFromSequences(browser)
        job = logic.startSequenceJob(browser.GetProxyNode(sequence), "bspline", (1, 1, 2))
        self.waitWhile(lambda: job.active)
        self.assertEqual((job.state, job.message), (JobState.DONE, "Done: 3 of 3 sequence items super-resolved."))
        output = job.outputSequence
        self.assertEqual(output.GetNumberOfDataNodes(), 3)
        self.assertEqual([output.GetNthIndexValue(n) for n in range(3)], ["0", "1", "2"])
        for n in range(3):
            self.assertCornerAligned(sequence.GetNthDataNode(n), output.GetNthDataNode(n), (1, 1, 2))
        self.assertTrue(browser.IsSynchronizedSequenceNodeID(output.GetID()))
        self.assertIs(job.outputProxy, browser.GetProxyNode(output))
        self.delayDisplay("Many volumes test passed")

    def test_Panel(self):
        """The panel: settings through the parameter node, Super-resolve, the result, the zoom, then Cancel."""
        import numpy as np
        import SampleData
        from MedSRLib.apps.panel import option_fields
        from MedSRLib.apps.process import JobState, RESULT
        inputNode = SampleData.downloadSample("MRHead")
        slicer.util.selectModule("MedSR")
        widget = slicer.modules.medsr.widgetRepresentation().self()
        parameters = widget.logic.getParameterNode()
        parameters.inputVolume = inputNode
        parameters.method = "smore"  # its "Method options" fields, generated from its declarations
        self.assertEqual(widget.methodOptionsForm.layout().rowCount(), len(option_fields("smore")))
        parameters.method = "bspline"  # none: the section is hidden
        self.assertTrue(widget.methodOptionsSection.isHidden())
        parameters.scaleX, parameters.scaleY, parameters.scaleZ = 1.0, 1.0, 2.0
        parameters.compare, parameters.bsplineView, parameters.differenceView = True, False, True
        parameters.zoom = 1.0
        self.assertEqual(widget.ui.inputSelector.currentNode(), inputNode)
        self.assertTrue(widget.ui.differenceViewCheckBox.checked)
        self.assertEqual(parameters.parameterNode.GetParameter("differenceView"), "True")  # stored in the scene
        self.assertEqual(widget.ui.methodComboBox.currentText, "bspline")
        self.assertEqual(widget.ui.scaleZSpinBox.value, 2.0)
        self.assertEqual(float(parameters.parameterNode.GetParameter("scaleZ")), 2.0)  # stored in the scene

        self.delayDisplay("Super-resolve from the panel")
        widget.ui.applyButton.click()
        job = widget.logic.job
        self.assertEqual(widget.ui.applyButton.text, "Cancel")
        self.waitWhile(lambda: job.active)
        self.assertEqual(job.state, JobState.DONE, job.message)
        self.assertEqual(widget.ui.applyButton.text, "Super-resolve")
        resultNode = job.resultNodes[RESULT]
        self.assertCornerAligned(inputNode, resultNode, (1, 1, 2))
        self.assertEqual(resultNode.GetAttribute("MedSR.method"), "bspline")
        self.assertEqual(resultNode.GetAttribute("MedSR.scale"), "1,1,2")
        self.assertIn(resultNode.GetName(), widget.ui.etaLabel.text)
        self.assertNotIn("difference", job.resultNodes)  # B-spline has no difference to itself

        self.delayDisplay("Zoom ×2 from the panel: every compare view shows half the field of view")
        redNode = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode()
        yellowNode = slicer.app.layoutManager().sliceWidget("Yellow").mrmlSliceNode()
        fieldsOfView = [redNode.GetFieldOfView()[:2], yellowNode.GetFieldOfView()[:2]]
        widget.ui.zoomSliderWidget.value = 2.0
        self.assertEqual(parameters.zoom, 2.0)
        for sliceNode, before in zip((redNode, yellowNode), fieldsOfView):
            np.testing.assert_allclose(sliceNode.GetFieldOfView()[:2], np.asarray(before) / 2, rtol=1e-6)

        self.delayDisplay("Cancel from the panel")
        nodesBefore = self.nodeIDs()
        widget.ui.applyButton.click()
        job = widget.logic.job
        self.waitWhile(lambda: job.state == JobState.PREPARING)
        widget.ui.applyButton.click()  # now labelled Cancel
        self.waitWhile(lambda: job.active)
        self.assertEqual(job.state, JobState.CANCELLED)
        self.assertEqual(self.nodeIDs(), nodesBefore)
        self.assertChildGone(job)
        self.assertEqual(widget.ui.applyButton.text, "Super-resolve")
        self.delayDisplay("Panel test passed")

    def test_LearnedModel(self):
        import numpy as np
        import SampleData
        from MedSRLib.apps.panel import method_choices
        from MedSRLib.apps.process import JobState, RESULT
        choices = [choice for choice in method_choices() if choice.checkpoint is not None]
        if not choices:
            self.delayDisplay("No trained model in the catalog; learned-method test skipped")
            return
        choice = choices[0]
        mrHead = SampleData.downloadSample("MRHead")
        # A 48³ crop keeps a CPU run short; it keeps MRHead's directions and spacing.
        crop = slicer.util.arrayFromVolume(mrHead)[40:88, 100:148, 100:148]
        inputNode = slicer.util.addVolumeFromArray(np.array(crop), self.ijkToRAS(mrHead), "MRHead crop")
        self.delayDisplay(f"Super-resolving with {choice.checkpoint} ({choice.method})")
        job = MedSRLogic().startJob(inputNode, choice.method, choice.scale, checkpoint=choice.checkpoint)
        self.waitWhile(lambda: job.active)
        self.assertEqual(job.state, JobState.DONE, job.message)
        resultNode = job.resultNodes[RESULT]
        self.assertCornerAligned(inputNode, resultNode, np.asarray(choice.scale))
        self.assertEqual(resultNode.GetAttribute("MedSR.method"), choice.method)
        self.assertEqual(len(resultNode.GetAttribute("MedSR.checkpointSHA256")), 64)
        self.delayDisplay("Learned-method test passed")
