"""``medsr serve`` over loopback: a real uvicorn server on a free port, real worker processes, the client of
MedSRLib.apps.client and plain HTTP requests. Results equal local ``super_resolve`` bit for bit; every refusal is one
sentence with its status; one worker runs one job while the next waits; cancel ends the worker process; nothing is
left in the server's folder after a download."""
import http.client
import json
import os
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="medsr serve needs the 'serve' extra: pip install 'medsr[serve]'")
uvicorn = pytest.importorskip("uvicorn", reason="medsr serve needs the 'serve' extra: pip install 'medsr[serve]'")
pytest.importorskip("multipart", reason="medsr serve needs the 'serve' extra: pip install 'medsr[serve]'")

import torch  # noqa: E402

from MedSRLib.api import super_resolve  # noqa: E402
from MedSRLib.apps.cli import main as medsr  # noqa: E402
from MedSRLib.apps.client import TOKEN_VARIABLE, ServerClient  # noqa: E402
from MedSRLib.apps.server import ServerSettings, create_app, server_token  # noqa: E402
from MedSRLib.errors import Cancelled, InputError, MedSRError  # noqa: E402
from MedSRLib.io.volume import Volume  # noqa: E402
from MedSRLib.io.volume_files import read_volume, write_volume  # noqa: E402
from test_volume import write_dicom_series  # noqa: E402

TOKEN = "test-token-for-loopback"
MAX_UPLOAD_MB = 1
# A job that runs until it is cancelled: SMORE training on a thick-slice volume for far more iterations than a test waits.
LONG_JOB = dict(method="smore", scale="auto", iterations=1_000_000)


@pytest.fixture(scope="module")
def server():
    """A server with one worker on the CPU (its app: ``state.url``, ``state.jobs``)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("OMP_NUM_THREADS", "1")  # the workers compute as this process does, on one thread
    app = create_app(ServerSettings(TOKEN, device="cpu", workers=1, max_upload_mb=MAX_UPLOAD_MB))
    runner = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not runner.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    port = runner.servers[0].sockets[0].getsockname()[1]
    app.state.url = f"http://127.0.0.1:{port}"
    yield app
    runner.should_exit = True
    thread.join(30)
    patch.undo()


@pytest.fixture
def client(server):
    return ServerClient(server.state.url, TOKEN)


@pytest.fixture
def small_volume(tmp_path):
    """A 12³ anisotropic NRRD with an off-axis direction, written by the test."""
    rng = np.random.default_rng(16)
    direction = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    volume = Volume(rng.normal(100, 30, (12, 12, 12)).astype(np.float32), (0.9, 1.1, 2.0), (4.0, -7.5, 12.0),
                    direction, {})
    path = tmp_path / "small.nrrd"
    write_volume(volume, path)
    return path


@pytest.fixture
def thick_volume(tmp_path):
    """24 × 24 in-plane voxels, 8 slices 3 mm apart: enough for SMORE to train on."""
    path = tmp_path / "thick.nrrd"
    write_volume(Volume(np.random.default_rng(3).random((8, 24, 24), dtype=np.float32), (1.0, 1.0, 3.0),
                        (0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0), {}), path)
    return path


def assert_same_volume(received: Volume, expected: Volume):
    np.testing.assert_array_equal(received.array, expected.array)
    assert received.array.dtype == expected.array.dtype
    assert (received.spacing, received.origin, received.direction) == \
           (expected.spacing, expected.origin, expected.direction)


def wait_for(condition, what, timeout_s=60.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def assert_no_job_files(server):
    """The server's folder empties (a download's files are removed just after it is sent)."""
    wait_for(lambda: os.listdir(server.state.jobs.root) == [], "the server's job files to be removed", timeout_s=10)


def raw_request(server, path, token=TOKEN, method="GET"):
    """(status, detail) of a plain request, to see the server's answer without the client."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(server.state.url + path, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)["detail"]


def test_interpolation_result_equals_the_local_one_and_leaves_no_files(server, client, small_volume, tmp_path):
    before = small_volume.read_bytes()
    output = tmp_path / "from-server.nrrd"
    status = client.super_resolve_file(small_volume, output, "bspline", "2")

    local = super_resolve(read_volume(small_volume), "bspline", 2)
    received = read_volume(output)
    assert_same_volume(received, local)
    assert status["state"] == "done" and status["result"]["size"] == list(local.size)
    assert status["result"]["metadata"]["source"] == "small.nrrd"  # not the server's temporary path
    assert small_volume.read_bytes() == before
    assert not any(path.name.startswith(".") for path in tmp_path.iterdir())  # no partial download left
    assert_no_job_files(server)
    assert raw_request(server, f"/jobs/{status['id']}")[0] == 404


def test_learned_model_result_equals_the_local_one_in_the_requested_format(client, small_volume, tmp_path):
    torch.set_num_threads(1)
    output = tmp_path / "miassr.nii.gz"
    # No scale: the server asks the method for its default (the model's in-plane factors), as a local call does.
    client.super_resolve_file(small_volume, output, "miassr", checkpoint="miassr-cpu")

    local = tmp_path / "local.nii.gz"
    write_volume(super_resolve(read_volume(small_volume), "miassr", checkpoint="miassr-cpu", device="cpu"), local)
    assert_same_volume(read_volume(output), read_volume(local))


def test_command_line_with_server_writes_what_it_writes_locally(server, small_volume, tmp_path, capsys):
    """On a DICOM series folder, which the client zips on the way."""
    folder = tmp_path / "series"
    folder.mkdir()
    rng = np.random.default_rng(5)
    write_dicom_series(Volume(rng.integers(0, 1000, (6, 10, 10)).astype(np.int16), (0.8, 0.8, 2.5), (1.0, 2.0, 3.0),
                              (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0), {}), folder)
    remote, local = tmp_path / "remote.nii.gz", tmp_path / "local.nii.gz"
    common = ["--method", "lanczos", "--scale", "1,1,2", "--output-dtype", "input", "--quiet"]
    assert medsr(["super-resolve", str(folder), str(local), *common]) == 0
    assert medsr(["super-resolve", str(folder), str(remote), *common, "--server", server.state.url,
                  "--token", TOKEN]) == 0
    assert_same_volume(read_volume(remote), read_volume(local))
    capsys.readouterr()
    assert medsr(["super-resolve", str(small_volume), str(tmp_path / "no.nrrd"), "--server", server.state.url,
                  "--token", "wrong"]) == 2
    assert capsys.readouterr().err.startswith("medsr: error: The token was not accepted by this MedSR server")
    assert not (tmp_path / "no.nrrd").exists()


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
def test_a_generated_token_is_kept_for_its_owner_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv(TOKEN_VARIABLE, raising=False)
    token, source = server_token(None)
    stored = tmp_path / "medsr" / "server-token"
    assert source is None and len(token) >= 32 and stored.stat().st_mode & 0o777 == 0o600
    assert server_token(None) == (token, str(stored))  # the next start uses it
    assert server_token("given") == ("given", "--token")


def test_token_is_required_on_every_endpoint(server):
    for path in ("/methods", "/jobs/anything", "/jobs/anything/result"):
        status, detail = raw_request(server, path, token=None)
        assert status == 401 and detail.startswith("This MedSR server needs its token")
    status, detail = raw_request(server, "/methods", token="wrong")
    assert status == 401 and detail.startswith("The token was not accepted")
    with pytest.raises(MedSRError, match="token was not accepted"):
        ServerClient(server.state.url, "wrong").methods()


def test_methods_are_the_local_list(client):
    from MedSRLib.api import methods_and_models
    assert client.methods() == json.loads(json.dumps(methods_and_models()))


def test_unknown_job_is_404(server, client):
    assert raw_request(server, "/jobs/no-such-job")[0] == 404
    with pytest.raises(InputError, match="^No job 'no-such-job' on this server"):
        client.cancel("no-such-job")


def test_upload_over_the_limit_is_413(server, client, tmp_path):
    limit = MAX_UPLOAD_MB * 2 ** 20
    connection = http.client.HTTPConnection(server.state.url.removeprefix("http://"), timeout=30)
    connection.putrequest("POST", "/jobs")
    connection.putheader("Authorization", f"Bearer {TOKEN}")
    connection.putheader("Content-Length", str(limit + 1))
    connection.endheaders()  # the server answers before any of the body is sent
    response = connection.getresponse()
    sentence = f"The upload is larger than this server's limit of {MAX_UPLOAD_MB} MB (medsr serve --max-upload-mb)."
    assert (response.status, json.load(response)["detail"]) == (413, sentence)
    connection.close()

    too_large = tmp_path / "large.nrrd"
    too_large.write_bytes(os.urandom(limit))  # with the form's other fields, over the limit
    with pytest.raises(InputError) as refused:
        client.submit(too_large)
    assert str(refused.value) == sentence
    assert_no_job_files(server)


@pytest.mark.parametrize("method, scale", [("bspline", "0.5"), ("no-such-method", "2"), ("threeplayer", "1,1,3")])
def test_bad_request_is_422_with_the_local_sentence(server, client, small_volume, method, scale):
    with pytest.raises(MedSRError) as local:
        super_resolve(read_volume(small_volume), method, scale)
    with pytest.raises(InputError) as remote:
        client.submit(small_volume, method, scale)
    assert str(remote.value) == str(local.value)
    assert_no_job_files(server)


def test_unreadable_volume_is_422_with_the_local_sentence(server, client, tmp_path, monkeypatch):
    (tmp_path / "garbage.nrrd").write_text("not a volume")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as local:
        read_volume("garbage.nrrd")
    with pytest.raises(InputError) as remote:
        client.submit("garbage.nrrd")
    assert str(remote.value) == str(local.value)


def test_a_job_that_fails_says_why_as_the_local_run_does(server, client, small_volume):
    options = dict(normalisation="window")  # accepted on arrival; the worker finds no window to normalise with
    with pytest.raises(MedSRError) as local:
        super_resolve(read_volume(small_volume), "bspline", 2, **options)
    job = client.submit(small_volume, "bspline", "2", **options)
    with pytest.raises(MedSRError) as remote:
        client.wait(job["id"], poll_interval_s=0.1)
    assert str(remote.value) == str(local.value)
    assert client.status(job["id"])["state"] == "failed"
    assert_no_job_files(server)


def test_options_the_server_chooses_are_refused(client, small_volume):
    with pytest.raises(InputError, match="own device"):
        client.submit(small_volume, device="cuda")
    with pytest.raises(InputError, match="shipped model's name"):
        client.submit(small_volume, "miassr", "2,2,1", checkpoint="/etc/passwd")


def test_one_worker_queues_the_next_job_cancel_ends_the_worker_and_results_expire(server, client, small_volume,
                                                                                  thick_volume, tmp_path, monkeypatch):
    waiting = client.submit(thick_volume, **LONG_JOB)
    queued = client.submit(small_volume, "bspline", "2")
    dropped = client.submit(small_volume, "bspline", "2")
    wait_for(lambda: client.status(waiting["id"])["progress"][1] > 0, "the long job's worker to run")
    assert client.status(queued["id"])["state"] == "queued"

    assert client.cancel(dropped["id"])["state"] == "cancelled"  # cancelled while queued: no process started
    worker = next(job for job in server.state.jobs.jobs() if job.id == waiting["id"]).child_pid
    with pytest.raises(Cancelled, match="^Cancelled by the client; nothing was written.$"):
        client.wait(waiting["id"], cancel=lambda: True)  # a waiting client that is cancelled cancels the job
    assert client.status(waiting["id"])["state"] == "cancelled"
    with pytest.raises(ProcessLookupError):
        os.kill(worker, 0)
    with pytest.raises(InputError, match="has no result"):
        client.download(waiting["id"], tmp_path / "never.nrrd")

    assert client.wait(queued["id"])["state"] == "done"  # the queued job starts once the worker is free

    monkeypatch.setattr(server.state.jobs, "keep_s", 1.0)  # medsr serve --keep-minutes, shortened
    wait_for(lambda: raw_request(server, f"/jobs/{queued['id']}")[0] == 404, "the result to expire", timeout_s=10)
    assert_no_job_files(server)

