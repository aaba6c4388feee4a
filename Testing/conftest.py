"""Fixtures shared by the MedSR test suites."""
import numpy as np
import pytest

from MedSRLib.data import dataset_path
from MedSRLib.errors import InputError
from MedSRLib.volume import read_volume


@pytest.fixture(scope="session")
def colin27() -> np.ndarray:
    """The Colin27 volume (uint8, k, j, i) from the data cache; skipped when the cache lacks it."""
    try:
        path = dataset_path("colin27")
    except InputError:
        pytest.skip("Colin27 is not in the data cache (run `medsr fetch-data` or `python -m MedSRLib.data colin27`).")
    return read_volume(path).array
