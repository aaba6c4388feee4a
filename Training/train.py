"""Command line: ``python -m Training.train --config Training/configs/threeplayer-x2.yaml [--set key=value …]``.

A run continues automatically from ``<output>/training_state.safetensors`` if present (``--fresh`` starts over).
Several processes or machines: ``torchrun --nproc_per_node N -m Training.train --config …`` (DDP; gloo on the CPU).
"""
import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from MedSRLib.errors import MedSRError

from .config import load_config
from .distributed import Distributed
from .board import CURVE_FILE
from .trainer import MODEL_FILE, STATE_FILE, train


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m Training.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML config (Training/configs/*.yaml); defaults are in Training/config.py")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config value, e.g. --set training.steps=1000 (repeatable)")
    parser.add_argument("--fresh", action="store_true",
                        help="discard a saved training state and training curve and start at step 0")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        config = load_config(arguments.config, arguments.set)
        dist = Distributed.start(config["training"]["device"])
        if arguments.fresh and dist.is_main:
            for stale in (STATE_FILE, CURVE_FILE):
                (Path(config["output"]) / stale).unlink(missing_ok=True)
        dist.barrier()
        try:
            train(config, dist)
        finally:
            dist.close()
    except MedSRError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    if dist.is_main:
        print(Path(config["output"]) / MODEL_FILE)


if __name__ == "__main__":
    main()
