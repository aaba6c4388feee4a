"""Checkpoint files: round trip, metadata schema, integrity checks, refusal of pickles, and load_model."""
import hashlib
import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from MedSRLib._version import __version__
from MedSRLib.models.checkpoints import check_compatible, load_checkpoint, load_model, save_checkpoint, weights_sha256
from MedSRLib.errors import CheckpointError
from MedSRLib.files import file_sha256
from MedSRLib.nn.registry import register_architecture

TINY_ARCHITECTURE = "test-checkpoints-tiny"


@register_architecture(TINY_ARCHITECTURE)
class TinyNet(torch.nn.Module):
    def __init__(self, channels=2):
        super().__init__()
        self.conv = torch.nn.Conv3d(1, channels, 3, padding=1)
        self.norm = torch.nn.BatchNorm3d(channels)  # brings an int64 buffer (num_batches_tracked)

    def forward(self, image):
        return self.norm(self.conv(image))


def make_metadata(**changes):
    metadata = {
        "method": "tiny-sr",
        "architecture": {"name": TINY_ARCHITECTURE, "params": {"channels": 2}},
        "scales": [[1, 1, 2], [1, 1, 4]],
        "axes": "3d",
        "patch": [16, 16, 16],
        "normalisation": {"mode": "percentile", "percentiles": [0.5, 99.5]},
        "training": {"data": ["synthetic"], "config": {"epochs": 1}, "budget": "1 minute", "hardware": "CPU"},
        "metrics": {},
    }
    metadata.update(changes)
    return metadata


def trained_net():
    torch.manual_seed(0)
    net = TinyNet(channels=2)
    net.train()
    net(torch.rand(2, 1, 4, 4, 4))  # moves the BatchNorm running statistics away from their defaults
    return net.eval()


def read_header(path):
    with open(path, "rb") as stream:
        length = struct.unpack("<Q", stream.read(8))[0]
        return json.loads(stream.read(length))


def test_round_trip_keeps_weights_and_metadata(tmp_path):
    net = trained_net()
    path = tmp_path / "model.safetensors"
    stored = save_checkpoint(path, net, make_metadata())

    state, metadata = load_checkpoint(path)
    assert metadata == stored
    assert metadata["medsr_version"] == __version__ and metadata["scales"] == [[1, 1, 2], [1, 1, 4]]
    assert set(state) == set(net.state_dict())
    for name, tensor in net.state_dict().items():
        assert state[name].dtype == tensor.dtype and torch.equal(state[name], tensor)
    assert json.loads(read_header(path)["__metadata__"]["medsr"]) == stored
    assert [item.name for item in tmp_path.iterdir()] == ["model.safetensors"]  # no temporary file left


def test_weights_hash_is_canonical_and_order_free():
    # sha256 of name, dtype and shape, then the raw little-endian bytes of 1.0f.
    expected = hashlib.sha256(b"w\0float32\0[1]\0" + b"\x00\x00\x80\x3f").hexdigest()
    assert weights_sha256({"w": torch.tensor([1.0])}) == expected
    first = {"a": torch.zeros(2, 3), "b": torch.arange(4)}
    assert weights_sha256(first) == weights_sha256(dict(reversed(list(first.items()))))
    assert weights_sha256(first) != weights_sha256({"a": torch.zeros(3, 2), "b": torch.arange(4)})


def test_half_storage_halves_the_file_and_loads_as_float32(tmp_path):
    state = {"weight": torch.linspace(-2, 2, 10_000), "count": torch.tensor(7)}
    full = save_checkpoint(tmp_path / "full.safetensors", state, make_metadata())
    half = save_checkpoint(tmp_path / "half.safetensors", state, make_metadata(), half=True)
    assert full["weights_sha256"] != half["weights_sha256"]
    full_bytes = (tmp_path / "full.safetensors").stat().st_size
    assert (tmp_path / "half.safetensors").stat().st_size < 0.6 * full_bytes

    loaded, _ = load_checkpoint(tmp_path / "half.safetensors")
    assert loaded["weight"].dtype == torch.float32
    assert torch.allclose(loaded["weight"], state["weight"], atol=2e-3)
    assert loaded["count"].dtype == torch.int64 and loaded["count"].item() == 7


@pytest.mark.parametrize("field, value, named", [
    ("method", None, "method"),
    ("architecture", {"name": TINY_ARCHITECTURE}, "architecture.params"),
    ("scales", [[1, 2]], "scales"),
    ("scales", [[1, 0, 2]], "scales"),
    ("axes", "", "axes"),
    ("patch", [16, -1], "patch"),
    ("normalisation", {}, "normalisation.mode"),
    ("training", {"data": [], "config": {}, "budget": 1}, "training.hardware"),
    ("metrics", None, "metrics"),
    ("created", "yesterday", "created"),
])
def test_save_names_the_bad_metadata_field(tmp_path, field, value, named):
    metadata = make_metadata(**{field: value})
    if value is None:
        del metadata[field]
    with pytest.raises(CheckpointError, match=f"'{named}'"):
        save_checkpoint(tmp_path / "bad.safetensors", {"w": torch.zeros(1)}, metadata)
    assert list(tmp_path.iterdir()) == []


def test_failed_save_keeps_the_previous_file(tmp_path):
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, {"w": torch.zeros(1)}, make_metadata())
    before = file_sha256(path)
    with pytest.raises(CheckpointError, match="JSON"):
        save_checkpoint(path, {"w": torch.ones(1)}, make_metadata(metrics={"psnr": object()}))
    assert file_sha256(path) == before and len(list(tmp_path.iterdir())) == 1


def test_load_refuses_missing_truncated_and_garbage_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.safetensors")

    path = tmp_path / "model.safetensors"
    save_checkpoint(path, trained_net(), make_metadata())
    content = path.read_bytes()
    for name, broken in [("truncated", content[: len(content) - 10]), ("header-cut", content[:40]),
                         ("garbage", bytes(range(256)) * 4), ("empty", b"")]:
        broken_path = tmp_path / f"{name}.safetensors"
        broken_path.write_bytes(broken)
        with pytest.raises(CheckpointError, match="truncated or not a safetensors file"):
            load_checkpoint(broken_path)


def test_load_detects_changed_weights(tmp_path):
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, {"w": torch.zeros(100)}, make_metadata())
    content = bytearray(path.read_bytes())
    content[-1] ^= 0xFF  # the last byte is tensor data
    path.write_bytes(bytes(content))
    with pytest.raises(CheckpointError, match="do not match the checksum"):
        load_checkpoint(path)


def test_load_requires_medsr_metadata(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(1)}, str(plain))
    with pytest.raises(CheckpointError, match="no MedSR metadata"):
        load_checkpoint(plain)

    not_json = tmp_path / "not-json.safetensors"
    save_file({"w": torch.zeros(1)}, str(not_json), metadata={"medsr": "{oops"})
    with pytest.raises(CheckpointError, match="invalid JSON"):
        load_checkpoint(not_json)

    incomplete = tmp_path / "incomplete.safetensors"
    metadata = make_metadata(medsr_version="0.1.0", created="2025-01-01", weights_sha256="0" * 64)
    del metadata["axes"]
    save_file({"w": torch.zeros(1)}, str(incomplete), metadata={"medsr": json.dumps(metadata)})
    with pytest.raises(CheckpointError, match="'axes'"):
        load_checkpoint(incomplete)


@pytest.mark.parametrize("name", ["model.pt", "model.pth", "model.ckpt", "disguised.safetensors"])
def test_pickled_files_are_refused(tmp_path, name):
    path = tmp_path / name
    torch.save({"w": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="pickled PyTorch file"):
        load_checkpoint(path)


def test_legacy_pickle_format_is_refused(tmp_path):
    path = tmp_path / "legacy.safetensors"
    torch.save({"w": torch.zeros(1)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="pickled PyTorch file"):
        load_checkpoint(path)


def test_check_compatible():
    metadata = make_metadata()
    check_compatible(metadata, "tiny-sr", (1, 1, 2))
    check_compatible(metadata, "tiny-sr", [1.0, 1.0, 4.0000001])
    with pytest.raises(CheckpointError, match="trained for method 'tiny-sr', not 'other'"):
        check_compatible(metadata, "other", (1, 1, 2))
    with pytest.raises(CheckpointError, match=r"scales 1×1×2, 1×1×4, not 2×2×2"):
        check_compatible(metadata, "tiny-sr", (2, 2, 2))


def test_load_model_from_path_matches_the_saved_network(tmp_path):
    net = trained_net()
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, net, make_metadata())
    loaded, metadata = load_model(str(path))
    assert isinstance(loaded, TinyNet) and not loaded.training
    assert metadata["architecture"]["name"] == TINY_ARCHITECTURE
    image = torch.rand(1, 1, 5, 5, 5)
    with torch.no_grad():
        assert torch.equal(loaded(image), net(image))


def test_load_model_refuses_weights_that_do_not_fit(tmp_path):
    path = tmp_path / "wide.safetensors"
    wrong = make_metadata(architecture={"name": TINY_ARCHITECTURE, "params": {"channels": 3}})
    save_checkpoint(path, TinyNet(channels=2), wrong)
    with pytest.raises(CheckpointError, match="does not fit architecture .*size mismatch for conv.weight"):
        load_model(path)

    path = tmp_path / "missing-key.safetensors"
    state = TinyNet(channels=2).state_dict()
    del state["conv.bias"]
    save_checkpoint(path, state, make_metadata())
    with pytest.raises(CheckpointError, match="does not fit architecture .*conv.bias"):
        load_model(path)

    path = tmp_path / "unknown.safetensors"
    save_checkpoint(path, TinyNet(), make_metadata(architecture={"name": "no-such-net", "params": {}}))
    with pytest.raises(CheckpointError, match="unknown architecture 'no-such-net'"):
        load_model(path)


def test_load_model_by_catalog_name(tmp_path):
    save_checkpoint(tmp_path / "tiny.safetensors", trained_net(), make_metadata(), half=True)
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"schema": 1, "models": [{
        "name": "tiny-x2", "file": "tiny.safetensors", "sha256": file_sha256(tmp_path / "tiny.safetensors"),
        "description": "test", "method": "tiny-sr", "modality": "MR", "contrast": "T1", "domain": "test",
        "scales": [[1, 1, 2]]}]}))
    net, metadata = load_model("tiny-x2", catalog_path=catalog)
    assert isinstance(net, TinyNet) and metadata["method"] == "tiny-sr"
    assert net.conv.weight.dtype == torch.float32

    with pytest.raises(CheckpointError, match=r"neither a checkpoint file nor .*\(catalog models: tiny-x2\)"):
        load_model("tiny-x3", catalog_path=catalog)
