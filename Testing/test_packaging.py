"""What pyproject.toml promises: a torch range the tested pin satisfies, the demo's Pillow, and PIQE (OpenCV) as an
optional extra whose absence is one sentence."""
import sys
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement

from MedSRLib.errors import MedSRError
from MedSRLib.evaluation import metrics

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
PROJECT = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
TESTED_TORCH = "2.13.0"  # the README's install command and .ci/run pin it


def requirements(names):
    return {requirement.name.lower(): requirement for requirement in map(Requirement, names)}


def test_torch_is_a_range_that_the_tested_pin_satisfies():
    torch = requirements(PROJECT["dependencies"])["torch"]
    assert TESTED_TORCH in torch.specifier and "2.3.0" in torch.specifier and "2.2.2" not in torch.specifier
    assert not any(spec.operator == "==" for spec in torch.specifier)
    for path in ("README.md", ".ci/run"):
        assert f"torch=={TESTED_TORCH}" in (Path(__file__).resolve().parents[1] / path).read_text()


def test_pillow_is_a_dependency_and_pypiqe_an_extra():
    core = requirements(PROJECT["dependencies"])
    extras = PROJECT["optional-dependencies"]
    assert "pillow" in core and "pypiqe" not in core
    assert "pypiqe" in requirements(extras["metrics"]) and "pypiqe" in requirements(extras["test"])


def test_piqe_without_pypiqe_says_which_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pypiqe", None)  # makes `import pypiqe` raise ImportError
    with pytest.raises(MedSRError) as raised:
        metrics.piqe_slicewise(np.ones((4, 32, 32)), axis=0)
    assert str(raised.value) == 'PIQE needs the pypiqe package, which is not installed: pip install "medsr[metrics]".'
