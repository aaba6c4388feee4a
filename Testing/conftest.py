"""Fixtures shared by the MedSR test suites."""
import numpy as np
import pytest

from MedSRLib.data import dataset_path
from MedSRLib.errors import InputError
from MedSRLib.volume import read_volume


@pytest.fixture(scope="session")
def colin27_path():
    """Colin27's file in the data cache; skipped when the cache lacks it."""
    try:
        return dataset_path("colin27")
    except InputError:
        pytest.skip("Colin27 is not in the data cache (run `medsr fetch-data` or `python -m MedSRLib.data colin27`).")


@pytest.fixture(scope="session")
def colin27(colin27_path) -> np.ndarray:
    """The Colin27 volume (uint8, k, j, i)."""
    return read_volume(colin27_path).array
