"""DDP smoke test: two gloo processes on the CPU train a few steps and end with identical parameters (the paired 3D
recipe on real patches; the unpaired cycle recipe, whose generators also run outside their DDP wrappers, on synthetic
volumes).

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
from test_training_recipes import case_config, synthetic_data  # noqa: F401  (synthetic_data is a fixture)

WORLD_SIZE = 2
STEPS = 3


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _train_rank(rank: int, port: int, folder: str, config: dict) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                         world_size=WORLD_SIZE)
    trainer = train(config, Distributed(rank=rank, world_size=WORLD_SIZE, device=torch.device("cpu")))
    save_file({f"{name}/{key}": value.detach().contiguous() for name, network in trainer.recipe.networks.items()
               for key, value in network.named_parameters()}, f"{folder}/rank{rank}.safetensors")
    torch.distributed.destroy_process_group()


def train_on_two_ranks(folder, config) -> None:
    """Every rank's trained parameters are equal, and the critics are among them."""
    multiprocessing.spawn(_train_rank, args=(free_port(), str(folder), config), nprocs=WORLD_SIZE)
    first, second = (load_file(folder / f"rank{rank}.safetensors") for rank in range(WORLD_SIZE))
    assert first.keys() == second.keys() and any(key.startswith("critic") for key in first)
    for key in first:
        assert torch.equal(first[key], second[key]), key


@pytest.mark.parametrize("preset", ["threeplayer-code",  # RaGAN, feature network in the generator's optimiser
                                    pytest.param("dcsrn", marks=pytest.mark.slow)])  # WGAN-GP: double backward
def test_two_gloo_ranks_end_with_the_same_parameters(tmp_path, preset, training_volumes):
    train_on_two_ranks(tmp_path, load_config(overrides=tiny_overrides(tmp_path / "run", STEPS,
                                                                     **{"losses.preset": preset})))


def test_two_gloo_ranks_train_the_cycle_recipe_to_the_same_parameters(tmp_path, synthetic_data):
    train_on_two_ranks(tmp_path, case_config("unpaired-cycle", synthetic_data, tmp_path / "run", STEPS))
