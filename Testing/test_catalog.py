"""The model catalog: parsing, lookup, shipped files, and checksum-verified downloads from a local HTTP server."""
import functools
import hashlib
import http.server
import json
import threading

import pytest

from MedSRLib.models import catalog
from MedSRLib.models.catalog import DEFAULT_CATALOG, default_model_for, find_model, list_models, resolve_model
from MedSRLib.errors import Cancelled, CheckpointError
from MedSRLib.models.scales import ScaleSupport

PAYLOAD = bytes(range(256)) * 40  # 10 240 bytes standing in for a checkpoint
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


def entry(name, **fields):
    model = {"name": name, "sha256": PAYLOAD_SHA256, "description": "test model", "method": "rrdb3d",
             "modality": "MR", "contrast": "T1", "domain": "test", "scales": [[1, 1, 2]], "file": f"{name}.safetensors"}
    model.update(fields)
    return {key: value for key, value in model.items() if value is not None}


def write_catalog(folder, *models, schema=1):
    path = folder / "catalog.json"
    path.write_text(json.dumps({"schema": schema, "models": list(models)}))
    return path


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("MEDSR_CACHE_DIR", str(cache))
    monkeypatch.delenv("MEDSR_CATALOG", raising=False)
    return cache


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/served; ``server.requests`` lists the paths asked for."""
    served = tmp_path / "served"
    served.mkdir()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    httpd.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.folder = served
    httpd.requests = requests
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_every_shipped_model_is_verified_small_and_passes_its_publish_gate_on_its_held_out_scores():
    from MedSRLib.models.checkpoints import load_model
    from Training.publish import gate_refusal
    models = list_models()
    assert models, "the shipped catalog lists the trained models"
    for model in models:
        path = resolve_model(model.name)
        assert path.parent == DEFAULT_CATALOG.parent and path.stat().st_size <= 15 * 2 ** 20
        network, metadata = load_model(model.name)
        assert metadata["method"] == model.method and ScaleSupport.from_document(metadata, "metadata") == model.scales
        assert metadata["training"]["hardware"] and metadata["training"]["budget"]["steps"] > 0
        heldout = metadata["metrics"]["heldout"]
        recorded = {volume: {label: {**heldout["baselines"][volume][label], model.method: scores}
                             for label, scores in rows.items()}
                    for volume, rows in heldout["scores"].items()}
        assert gate_refusal(recorded, model.method, model.gate) is None, (model.name, model.gate)
    assert default_model_for("threeplayer", (2, 2, 2)).name == "threeplayer-x2"
    assert default_model_for("threeplayer", (2, 2, 2), device="cuda").name == "threeplayer-x2"
    # The fast variant (96 % of the gain over B-spline in an eighth of the time on Colin27) is the CPU's default.
    assert default_model_for("threeplayer", (2, 2, 2), device="cpu").name == "threeplayer-fast-x2"
    assert default_model_for("threeplayer", (1, 1, 2)) is None


def test_catalog_override_by_argument_and_environment(tmp_path, monkeypatch):
    path = write_catalog(tmp_path, entry("a"))
    assert [model.name for model in list_models(path)] == ["a"]
    monkeypatch.setenv("MEDSR_CATALOG", str(path))
    found = find_model("a")
    assert found.scales.scales == ((1.0, 1.0, 2.0),) and found.file == "a.safetensors" and found.url is None
    assert find_model("b") is None


def test_an_entry_records_the_publish_gate_it_passed(tmp_path):
    # Entries written before publish recorded gates passed the PSNR gate, the only one then.
    path = write_catalog(tmp_path, entry("perceptual", gate="perceptual"), entry("earlier"))
    assert [(model.name, model.gate) for model in list_models(path)] == [("perceptual", "perceptual"),
                                                                         ("earlier", "psnr")]


def test_default_model_is_the_first_for_method_and_scale(tmp_path):
    path = write_catalog(tmp_path, entry("x4", scales=[[1, 1, 4]]), entry("x2-first", scales=[[1, 1, 2], [2, 2, 2]]),
                         entry("x2-second"), entry("other-method", method="cyclegan2d"))
    assert default_model_for("rrdb3d", (1, 1, 2), path).name == "x2-first"
    assert default_model_for("rrdb3d", [2.0, 2.0, 2.0], path).name == "x2-first"
    assert default_model_for("rrdb3d", (1, 1, 4), path).name == "x4"
    assert default_model_for("cyclegan2d", (1, 1, 2), path).name == "other-method"
    assert default_model_for("rrdb3d", (1, 1, 3), path) is None


def test_a_model_offered_first_on_a_device_goes_ahead_of_earlier_entries_only_there(tmp_path):
    path = write_catalog(tmp_path, entry("full"), entry("x4", scales=[[1, 1, 4]], offered_first_on=["cpu"]),
                         entry("fast", offered_first_on=["cpu", "mps"]), entry("faster", offered_first_on=["cpu"]))
    assert find_model("fast", path).offered_first_on == ("cpu", "mps") and find_model("full", path).offered_first_on == ()
    assert default_model_for("rrdb3d", (1, 1, 2), path, device="cpu").name == "fast"  # catalog order among them
    assert default_model_for("rrdb3d", (1, 1, 2), path, device="mps").name == "fast"
    assert default_model_for("rrdb3d", (1, 1, 2), path, device="cuda").name == "full"
    assert default_model_for("rrdb3d", (1, 1, 2), path).name == "full"
    assert default_model_for("rrdb3d", (1, 1, 4), path, device="cuda").name == "x4"  # serving the scale comes first


@pytest.mark.parametrize("models, schema, message", [
    ([entry("a", description=None)], 1, "lacks the text field 'description'"),
    ([entry("a", scales=[[1, 2]])], 1, "'scales'"),
    ([entry("a", sha256="abc")], 1, "not a SHA-256"),
    ([entry("a", file=None)], 1, "needs a 'file' or a 'url'"),
    ([entry("a", url="ftp://example.org/a")], 1, "not http"),
    ([entry("a", gate="ssim")], 1, "has the gate 'ssim', not one of psnr, perceptual"),
    ([entry("a", offered_first_on=["gpu"])], 1, "'offered_first_on' that is not a list of cpu, cuda, mps"),
    ([entry("a", offered_first_on="cpu")], 1, "'offered_first_on' that is not a list"),
    ([entry("a"), entry("a")], 1, "more than once"),
    ([], 2, "schema-1"),
])
def test_malformed_catalogs_are_refused(tmp_path, models, schema, message):
    with pytest.raises(CheckpointError, match=message):
        list_models(write_catalog(tmp_path, *models, schema=schema))


def test_missing_or_unreadable_catalog(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        list_models(tmp_path / "absent.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(CheckpointError, match="cannot be read"):
        list_models(tmp_path / "broken.json")


def test_shipped_file_is_verified(tmp_path):
    path = write_catalog(tmp_path, entry("a"), entry("b"), entry("gone"))
    (tmp_path / "a.safetensors").write_bytes(PAYLOAD)
    (tmp_path / "b.safetensors").write_bytes(PAYLOAD[:-1])
    assert resolve_model("a", path) == tmp_path / "a.safetensors"
    with pytest.raises(CheckpointError, match="fails its checksum"):
        resolve_model("b", path)
    with pytest.raises(CheckpointError, match="is missing"):
        resolve_model("gone", path)
    with pytest.raises(CheckpointError, match=r"No model named 'c' .*available: a, b, gone"):
        resolve_model("c", path)


def test_download_goes_to_the_cache_and_is_reused(tmp_path, server, isolated_cache, monkeypatch):
    monkeypatch.setattr(catalog, "DOWNLOAD_CHUNK_BYTES", 4096)
    (server.folder / "a.safetensors").write_bytes(PAYLOAD)
    path = write_catalog(tmp_path, entry("a", file=None, url=f"{server.base_url}/a.safetensors"))
    seen = []

    resolved = resolve_model("a", path, progress=lambda done, total: seen.append((done, total)))
    assert resolved.parent == isolated_cache and resolved.read_bytes() == PAYLOAD
    assert seen == [(4096, 10240), (8192, 10240), (10240, 10240)]
    assert [item.name for item in isolated_cache.iterdir()] == [resolved.name]
    assert server.requests == ["/a.safetensors"]

    assert resolve_model("a", path) == resolved
    assert server.requests == ["/a.safetensors"]  # the verified cached copy needed no request


def test_damaged_cached_file_is_downloaded_again(tmp_path, server):
    (server.folder / "a.safetensors").write_bytes(PAYLOAD)
    path = write_catalog(tmp_path, entry("a", file=None, url=f"{server.base_url}/a.safetensors"))
    cached = resolve_model("a", path)
    cached.write_bytes(b"damaged")
    assert resolve_model("a", path).read_bytes() == PAYLOAD
    assert len(server.requests) == 2


def test_shipped_file_absent_falls_back_to_url(tmp_path, server):
    (server.folder / "a.safetensors").write_bytes(PAYLOAD)
    path = write_catalog(tmp_path, entry("a", url=f"{server.base_url}/a.safetensors"))
    assert resolve_model("a", path).read_bytes() == PAYLOAD


def test_checksum_mismatch_leaves_nothing_in_the_cache(tmp_path, server, isolated_cache):
    (server.folder / "a.safetensors").write_bytes(PAYLOAD + b"tampered")
    path = write_catalog(tmp_path, entry("a", file=None, url=f"{server.base_url}/a.safetensors"))
    with pytest.raises(CheckpointError, match="does not match the catalog checksum"):
        resolve_model("a", path)
    assert list(isolated_cache.iterdir()) == []


def test_http_error_is_reported_clearly(tmp_path, server, isolated_cache):
    path = write_catalog(tmp_path, entry("a", file=None, url=f"{server.base_url}/missing.safetensors"))
    with pytest.raises(CheckpointError, match=r"Downloading model 'a' from .*missing.safetensors failed \(HTTP 404"):
        resolve_model("a", path)
    assert list(isolated_cache.iterdir()) == []


def test_unreachable_server_is_reported_clearly(tmp_path, server):
    url = f"{server.base_url}/a.safetensors"
    server.shutdown()
    server.server_close()  # nothing listens on the port any more
    path = write_catalog(tmp_path, entry("a", file=None, url=url))
    with pytest.raises(CheckpointError, match="check the network connection"):
        resolve_model("a", path)


def test_cancelled_download_leaves_nothing(tmp_path, server, isolated_cache, monkeypatch):
    monkeypatch.setattr(catalog, "DOWNLOAD_CHUNK_BYTES", 4096)
    (server.folder / "a.safetensors").write_bytes(PAYLOAD)
    path = write_catalog(tmp_path, entry("a", file=None, url=f"{server.base_url}/a.safetensors"))
    with pytest.raises(Cancelled):
        resolve_model("a", path, cancel=lambda: True)
    assert list(isolated_cache.iterdir()) == []


def test_unwritable_cache_is_reported_clearly(tmp_path, server, monkeypatch):
    (server.folder / "a.safetensors").write_bytes(PAYLOAD)
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("MEDSR_CACHE_DIR", str(tmp_path / "not-a-folder"))
    path = write_catalog(tmp_path, entry("a", file=None, url=f"{server.base_url}/a.safetensors"))
    with pytest.raises(CheckpointError, match="not-a-folder is writable"):
        resolve_model("a", path)


def test_an_in_plane_method_finds_its_model_for_slices_along_any_axis():
    # miassr-cpu was trained on axial slices (in-plane factors 1.1–4 on x and y); sagittal slices ×2.5 (y, z) fit it.
    assert default_model_for("miassr", (1, 2.5, 2.5)) is None
    assert default_model_for("miassr", (1, 2.5, 2.5), axes="2d-in-plane").name == "miassr-cpu"
    assert default_model_for("miassr", (2, 2, 2), axes="2d-in-plane") is None


def test_a_through_plane_model_serves_its_thick_factors_along_any_one_axis(tmp_path):
    # Trained with thick slices along z, factors 2–12: the engine turns the slices, so x or y thick works too.
    path = write_catalog(tmp_path, entry("through", method="clade",
                                         scales=None, scale_range={"min": [1, 1, 2], "max": [1, 1, 12]}))
    for served in [(1, 1, 4), (6.5, 1, 1), (1, 12, 1), (1, 1, 2)]:
        assert default_model_for("clade", served, path, axes="2d-through-plane").name == "through", served
    for refused in [(1, 1, 13), (1, 1, 1.5), (2, 2, 1), (4, 4, 4), (1, 1, 1)]:
        assert default_model_for("clade", refused, path, axes="2d-through-plane") is None, refused
    assert default_model_for("clade", (6.5, 1, 1), path) is None  # as a 3D scale it is outside the range


def test_transmrsr_s_per_factor_models_stay_the_defaults_at_their_factors_and_the_range_model_serves_the_rest():
    def default(scale):
        model = default_model_for("transmrsr", scale, axes="2d-through-plane")
        return None if model is None else model.name
    assert default((1, 1, 4)) == "transmrsr-x4-cpu" and default((8, 1, 1)) == "transmrsr-x8-cpu"
    for factor in (2.5, 3, 5, 6.25, 7.9):
        assert default((1, factor, 1)) == "transmrsr-range-cpu", factor
    # Below 2.5 its validation lost to B-spline, so the catalog entry stops there; above 8 nothing was trained.
    assert default((1, 1, 2)) is None and default((1, 1, 1.5)) is None and default((1, 1, 9)) is None
