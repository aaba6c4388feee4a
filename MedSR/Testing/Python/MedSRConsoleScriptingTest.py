"""The README's console example in a real Slicer: superResolveVolumeNode on slicer.mrmlScene, in this process."""
import unittest

import numpy as np
import slicer


class MedSRConsoleScriptingTest(unittest.TestCase):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def test_oblique_thick_slices_bspline(self):
        from MedSRLib.apps.mrml import superResolveVolumeNode
        directions = np.array([[0.8, 0.0, 0.6], [0.0, 1.0, 0.0], [-0.6, 0.0, 0.8]])
        ijkToRAS = np.eye(4)
        ijkToRAS[:3, :3] = directions @ np.diag([1.0, 1.0, 3.0])
        ijkToRAS[:3, 3] = (10.0, -20.0, 5.0)
        voxels = np.random.default_rng(0).random((6, 8, 10)).astype(np.float32)
        inputNode = slicer.util.addVolumeFromArray(voxels, ijkToRAS, "thick")

        result = superResolveVolumeNode(inputNode, "bspline", (1, 1, 3))

        self.assertEqual(slicer.util.arrayFromVolume(result).shape, (18, 8, 10))
        np.testing.assert_allclose(result.GetSpacing(), (1.0, 1.0, 1.0))
        # Corner aligned: (10, −20, 5) minus one output voxel along k, (0.6, 0, 0.8).
        np.testing.assert_allclose(result.GetOrigin(), (9.4, -20.0, 4.2), atol=1e-9)
        resultDirections = np.zeros((3, 3))
        result.GetIJKToRASDirections(resultDirections)
        np.testing.assert_allclose(resultDirections, directions, atol=1e-12)
        hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        self.assertEqual(hierarchy.GetItemParent(hierarchy.GetItemByDataNode(result)),
                         hierarchy.GetItemParent(hierarchy.GetItemByDataNode(inputNode)))
        self.assertEqual(result.GetAttribute("MedSR.method"), "bspline")
