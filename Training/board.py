"""Run log: scalars appended to ``metrics.jsonl`` (always; the training curve) and, when the tensorboard package is
installed (``pip install -e ".[train]"``), TensorBoard scalars and sample slices."""
import json
import logging
from pathlib import Path
from typing import Dict

import numpy as np

logger = logging.getLogger(__name__)

CURVE_FILE = "metrics.jsonl"


class RunLog:
    def __init__(self, folder: Path, enabled: bool = True):
        self.enabled = enabled
        self.curve_path = folder / CURVE_FILE
        self.writer = None
        if not enabled:
            return
        folder.mkdir(parents=True, exist_ok=True)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            logger.warning("tensorboard is not installed, so only %s is written; pip install tensorboard for "
                           "TensorBoard logs.", self.curve_path)
            return
        self.writer = SummaryWriter(str(folder / "tensorboard"))

    def scalars(self, step: int, values: Dict[str, float]) -> None:
        if not self.enabled:
            return
        with open(self.curve_path, "a") as stream:
            stream.write(json.dumps({"step": step, **values}) + "\n")
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(name, value, step)

    def images(self, step: int, slices: Dict[str, np.ndarray]) -> None:
        if self.writer is not None:
            for name, image in slices.items():
                self.writer.add_image(f"samples/{name}", np.clip(image, 0, 1)[None], step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
