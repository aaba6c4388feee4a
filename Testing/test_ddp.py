"""DDP smoke test: two gloo processes on the CPU train a few steps and end with identical parameters.

Batch-norm running statistics (buffers, not parameters) are broadcast from rank 0 at each forward and then updated
locally, so they are compared only as parameters are: rank 0's are the ones a checkpoint keeps."""
import socket

import pytest
import torch
import torch.multiprocessing as multiprocessing
from safetensors.torch import load_file, save_file

from Training.config import load_config
from Training.distributed import Distributed
from Training.trainer import train
from test_training import tiny_overrides

WORLD_SIZE = 2
STEPS = 3


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _train_rank(rank: int, port: int, folder: str, preset: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                         world_size=WORLD_SIZE)
    config = load_config(overrides=tiny_overrides(f"{folder}/run", STEPS, **{"losses.preset": preset}))
    trainer = train(config, Distributed(rank=rank, world_size=WORLD_SIZE, device=torch.device("cpu")))
    save_file({f"{name}/{key}": value.detach().contiguous() for name, network in trainer.recipe.networks.items()
               for key, value in network.named_parameters()}, f"{folder}/rank{rank}.safetensors")
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("preset", ["threeplayer-code",  # RaGAN, feature network in the generator's optimiser
                                    pytest.param("dcsrn", marks=pytest.mark.slow)])  # WGAN-GP: double backward
def test_two_gloo_ranks_end_with_the_same_parameters(tmp_path, preset, training_volumes):
    multiprocessing.spawn(_train_rank, args=(free_port(), str(tmp_path), preset), nprocs=WORLD_SIZE)
    first, second = (load_file(tmp_path / f"rank{rank}.safetensors") for rank in range(WORLD_SIZE))
    assert first.keys() == second.keys() and any(key.startswith("critic/") for key in first)
    for key in first:
        assert torch.equal(first[key], second[key]), key
