"""``medsr serve``: an inference server that laptops (``medsr super-resolve --server``, :mod:`.client`, the Slicer panel)
send volumes to, for a machine with a GPU. FastAPI + uvicorn, the optional ``serve`` extra.

Every request needs ``Authorization: Bearer <token>``:

- ``GET /info``: MedSR's version, the device, the jobs run at a time and the upload limit;
- ``GET /methods``: the methods and models, as ``medsr methods --json`` lists them here;
- ``POST /jobs`` (multipart): ``volume`` (NRRD, NIfTI or MHA file, or a .zip of one DICOM series folder), ``method``,
  ``scale`` ("2", "1,1,3", "auto"; default as ``medsr super-resolve``), ``options`` (a JSON object of
  ``super_resolve``'s keyword options), ``output_format`` (".nii.gz", …; default: the upload's) → 202 and the job's
  status, or 422 with the sentence ``medsr super-resolve`` would print for the same request;
- ``GET /jobs/{id}``: its status (queued, running with the super-resolution's progress, done, failed, cancelled);
- ``POST /jobs/{id}/cancel``: stop it (its worker process and the process's children end);
- ``GET /jobs/{id}/result``: the result file; the job and its files are removed once it is sent.

Each job is a :class:`~MedSRLib.apps.process.SuperResolveJob`: a ``python -m MedSRLib.apps.worker`` process on the
server's device. ``workers`` jobs run at a time, the others wait in submission order; one thread advances them all.
An ended job's files are removed after its download or ``keep_minutes`` after it ended. Every refusal is one sentence
``{"detail": …}`` with its status (401 token, 404 job, 409 not done, 413 too large, 422 request), never a traceback.
"""
import json
import logging
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

from MedSRLib._version import __version__
from MedSRLib.api import methods_and_models, super_resolve
from MedSRLib.errors import InputError, MedSRError
from MedSRLib.io.volume_files import WRITABLE_EXTENSIONS, read_volume, write_volume
from MedSRLib.models.catalog import list_models
from .batch import first_line, limit_threads
from .client import DEFAULT_PORT, TOKEN_VARIABLE, upload_too_large
from .process import RESULT, JobState, SuperResolveJob, options_from_json

try:
    from fastapi import FastAPI, File, Form, HTTPException, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse
    from starlette.background import BackgroundTask
except ImportError:
    raise InputError('medsr serve needs FastAPI and uvicorn, which are not installed: pip install "medsr[serve]".') \
        from None

DEFAULT_WORKERS = 1
DEFAULT_MAX_UPLOAD_MB = 2048
DEFAULT_KEEP_MINUTES = 60
ADVANCE_INTERVAL_S = 0.05
CANCEL_WAIT_S = 15.0  # the worker gets TERMINATE_GRACE_S to stop before it is killed
COPY_CHUNK_BYTES = 1 << 20
ZIP_EXTENSION = ".zip"
# A zipped DICOM series may unpack to this many times the upload limit (DICOM compresses a few times at most).
UNZIPPED_FACTOR = 8
CANCELLED_BY_CLIENT = "Cancelled by the client; nothing was written."
PUBLIC_STATES = {JobState.IDLE: "queued", JobState.PREPARING: "running", JobState.RUNNING: "running",
                 JobState.IMPORTING: "running", JobState.DONE: "done", JobState.FAILED: "failed",
                 JobState.CANCELLED: "cancelled"}
# Options a client may not send: the server chooses its device, keeps no files of its own for clients, and callbacks
# do not travel as JSON.
SERVER_ONLY_OPTIONS = {
    "device": "The server runs every job on its own device (medsr serve --device); leave out device.",
    "save_model": "A server keeps no per-scan model for its clients; leave out save_model.",
}
NOT_AN_OPTION = "Option '{}' cannot be sent to a server."
_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerSettings:
    token: str
    device: str = "auto"
    workers: int = DEFAULT_WORKERS
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    keep_minutes: float = DEFAULT_KEEP_MINUTES

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2 ** 20)


# --- Jobs ----------------------------------------------------------------------------------------------------------

class ServerJob(SuperResolveJob):
    """One client's request: its upload is read (again: it was checked on arrival) when the job starts, so that queued
    jobs hold no volume in memory, and its result is written as a file in its folder. Only the queue's thread advances
    or cancels it; request handlers read its state and set ``cancel_requested``."""

    def __init__(self, folder: Path, upload: Path, upload_name: str, output_format: str, method: str, scale,
                 options: dict):
        super().__init__(None, method, scale, options)
        self.id = folder.name
        self.folder = folder
        self.upload = upload
        self.upload_name = upload_name
        self.output_format = output_format
        self.result_path = folder / f"result{output_format}"
        self.result_description: Optional[dict] = None
        self.super_resolution_progress = (0, 0)
        self.cancel_requested = False
        self.ended = threading.Event()
        self.ended_at: Optional[float] = None

    def _begin(self) -> None:
        self.volume = read_volume(self.upload)
        self.volume.metadata["source"] = self.upload_name  # the client's name, not the server's temporary path
        super()._begin()

    def _deliver(self) -> None:
        result = self.results.pop(RESULT)
        write_volume(result, self.result_path)
        self.result_description = {"size": result.size, "spacing": result.spacing, "metadata": result.metadata}

    def cancel(self, message: str = CANCELLED_BY_CLIENT) -> None:
        if self.state == JobState.IDLE:  # queued: no process yet
            self._end(JobState.CANCELLED, message)
        else:
            super().cancel(message)

    def _end(self, state: JobState, message: str) -> None:
        super()._end(state, message)
        self.volume = None
        remove_path(self.upload)
        if state != JobState.DONE:
            remove_path(self.folder)
        self.ended_at = time.monotonic()
        self.ended.set()

    def status(self) -> dict:
        return {"id": self.id, "state": PUBLIC_STATES[self.state], "stage": self.stage,
                "progress": list(self.super_resolution_progress), "message": self.message, "method": self.method,
                "scale": self.request["scale"], "result": self.result_description}


class JobQueue:
    """The server's jobs, in submission order; a thread starts up to ``workers`` of them and advances them."""

    def __init__(self, root: Path, workers: int, keep_s: float, log: Callable[[str], None] = _logger.info):
        self.root = root
        self.workers = workers
        self.keep_s = keep_s
        self.log = log
        self._jobs: Dict[str, ServerJob] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._advance_until_stopped, name="medsr-jobs", daemon=True)

    def new_folder(self) -> Path:
        folder = self.root / uuid.uuid4().hex
        folder.mkdir()
        return folder

    def add(self, job: ServerJob) -> None:
        with self._lock:
            self._jobs[job.id] = job

    def find(self, job_id: str) -> ServerJob:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"No job '{job_id}' on this server (never submitted, or its result was "
                                     "downloaded or expired).")
        return job

    def jobs(self) -> List[ServerJob]:
        with self._lock:
            return list(self._jobs.values())

    def cancel(self, job_id: str) -> ServerJob:
        """Ask the queue's thread to cancel the job, and wait until it has ended."""
        job = self.find(job_id)
        job.cancel_requested = True
        job.ended.wait(CANCEL_WAIT_S)
        return job

    def remove(self, job_id: str) -> None:
        with self._lock:
            job = self._jobs.pop(job_id, None)
        if job is not None:
            remove_path(job.folder)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop the thread, cancel every job (their processes end) and remove every file."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        for job in self.jobs():
            job.cancel("The server stopped.")
        remove_path(self.root)

    def _advance_until_stopped(self) -> None:
        while not self._stopping.is_set():
            try:
                self.advance()
            except Exception:  # a bug must not stop every later job
                _logger.exception("advancing the MedSR jobs failed")
            time.sleep(ADVANCE_INTERVAL_S)

    def advance(self) -> None:
        """One round: start queued jobs while fewer than ``workers`` run, cancel what clients asked to, advance the
        active jobs, log the ones that ended, forget the expired ones."""
        jobs = self.jobs()
        ended_before = {job.id for job in jobs if job.ended.is_set()}
        running = sum(job.active for job in jobs)
        for job in jobs:
            if job.state == JobState.IDLE and not job.cancel_requested and running < self.workers:
                job.start()
                running += job.active
        for job in jobs:
            if job.cancel_requested and not job.ended.is_set():
                job.cancel()
            elif job.active and job.poll() == JobState.RUNNING and job.progress[1] > 0:
                job.super_resolution_progress = job.progress
            if job.ended.is_set() and job.id not in ended_before:
                self.log(f"job {job.id} {PUBLIC_STATES[job.state]}: {job.message}")
        now = time.monotonic()
        for job in jobs:
            if job.ended_at is not None and now - job.ended_at > self.keep_s:
                self.remove(job.id)


def remove_path(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# --- Requests ------------------------------------------------------------------------------------------------------

def save_upload(upload: UploadFile, folder: Path, max_bytes: int) -> Path:
    """The uploaded volume in ``folder``: the file, or the DICOM series folder unpacked from a zip."""
    name = upload_name(upload)
    extension = upload_extension(name)
    saved = folder / f"input{extension}"
    with open(saved, "wb") as stream:
        shutil.copyfileobj(upload.file, stream, COPY_CHUNK_BYTES)
    if extension != ZIP_EXTENSION:
        return saved
    unpacked = folder / "input"
    try:
        with zipfile.ZipFile(saved) as archive:
            if sum(member.file_size for member in archive.infolist()) > UNZIPPED_FACTOR * max_bytes:
                raise HTTPException(413, f"The zip '{name}' unpacks to more than {UNZIPPED_FACTOR} times this server's "
                                         "upload limit.")
            archive.extractall(unpacked)  # drops absolute paths and '..', so nothing lands outside the folder
    except zipfile.BadZipFile:
        raise InputError(f"The upload '{name}' is not a readable zip file.") from None
    finally:
        saved.unlink()
    with_files = [Path(place) for place, _, files in os.walk(unpacked) if files]
    return with_files[0] if len(with_files) == 1 else unpacked


def upload_name(upload: UploadFile) -> str:
    return Path(upload.filename or "").name or "upload"  # only the name: the client's folders mean nothing here


def upload_extension(name: str) -> str:
    for extension in WRITABLE_EXTENSIONS + (ZIP_EXTENSION,):
        if name.lower().endswith(extension):
            return extension
    raise InputError(f"The upload '{name}' must be a volume file ({', '.join(WRITABLE_EXTENSIONS)}) or a .zip of one "
                     "DICOM series folder.")


def request_options(text: str, device: str) -> dict:
    """``super_resolve``'s keyword options from the request's JSON, with the server's device."""
    try:
        options = json.loads(text)
    except ValueError:
        options = None
    if not isinstance(options, dict):
        raise InputError('The options must be a JSON object of super_resolve\'s keyword options, e.g. {"patch": 32}.')
    for name in options:
        if name in SERVER_ONLY_OPTIONS or name in ("progress", "cancel", "check_only"):
            raise InputError(SERVER_ONLY_OPTIONS.get(name, NOT_AN_OPTION.format(name)))
    checkpoint = options.get("checkpoint")
    if checkpoint is not None:
        models = [model.name for model in list_models()]
        if checkpoint not in models:
            raise InputError(f"A server takes a shipped model's name as checkpoint ({', '.join(models)}), not "
                             f"'{checkpoint}'.")
    return {**options_from_json(options), "device": device}


def plan_job(folder: Path, upload: UploadFile, method: str, scale: Optional[str], options_json: str,
             output_format: Optional[str], settings: ServerSettings) -> ServerJob:
    """The job a request asks for, refused with the sentence ``super_resolve`` would raise if it cannot run."""
    name = upload_name(upload)
    saved = save_upload(upload, folder, settings.max_upload_bytes)
    try:
        options = request_options(options_json, settings.device)
        output_format = result_format(output_format, upload_extension(name))
        scale = scale or None  # none given: super_resolve asks the method for its default, as the command line does
        try:
            super_resolve(read_volume(saved), method, scale, check_only=True, **options)
        except (TypeError, ValueError) as error:  # an option of the wrong type, e.g. {"patch": "big"}
            raise InputError(f"The options do not fit super_resolve ({first_line(error)}).") from None
    except MedSRError as error:
        # The server's temporary path means nothing to the client: name its upload instead.
        raise InputError(str(error).replace(str(saved), name)) from None
    return ServerJob(folder, saved, name, output_format, method, scale, options)


def result_format(requested: Optional[str], upload_extension: str) -> str:
    """The result's file extension: the one requested, else the upload's (NRRD for a zipped DICOM series)."""
    if not requested:
        return upload_extension if upload_extension != ZIP_EXTENSION else ".nrrd"
    extension = "." + requested.lstrip(".").lower()
    if extension not in WRITABLE_EXTENSIONS:
        raise InputError(f"The output format must be one of {', '.join(WRITABLE_EXTENSIONS)}, not '{requested}'.")
    return extension


def refusal(status: int, detail: str, headers: Optional[dict] = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


class RequestGuard:
    """ASGI middleware that checks the token and the upload's size before a request's body is read: 401 without the
    right bearer token, 413 once the body passes the limit (announced or counted while it arrives)."""

    def __init__(self, app, settings: ServerSettings):
        self.app = app
        self.expected = f"Bearer {settings.token}".encode()
        self.max_bytes = settings.max_upload_bytes
        self.too_large = upload_too_large(settings.max_upload_mb)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        given = headers.get(b"authorization")
        if given is None or not secrets.compare_digest(given, self.expected):
            detail = ("This MedSR server needs its token: send 'Authorization: Bearer TOKEN' (medsr super-resolve "
                      f"--token, or {TOKEN_VARIABLE})." if given is None else
                      "The token was not accepted by this MedSR server; use the one it printed or stored at its start.")
            return await refusal(401, detail, {"WWW-Authenticate": "Bearer"})(scope, receive, send)
        announced = headers.get(b"content-length", b"").decode("latin-1")
        if announced.isdigit() and int(announced) > self.max_bytes:
            return await refusal(413, self.too_large)(scope, receive, send)
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(413, self.too_large)  # FastAPI answers it as it would the endpoint's own
            return message
        await self.app(scope, counted_receive, send)


def create_app(settings: ServerSettings) -> FastAPI:
    """The server's application; ``app.state.jobs`` is its :class:`JobQueue`, started and stopped with it."""
    root = Path(tempfile.mkdtemp(prefix="medsr-serve-"))
    jobs = JobQueue(root, settings.workers, settings.keep_minutes * 60,
                    log=lambda line: print(f"medsr serve: {line}", file=sys.stderr, flush=True))

    @asynccontextmanager
    async def lifespan(app):
        jobs.start()
        try:
            yield
        finally:
            jobs.close()

    # No interactive docs: they would be endpoints without the token.
    app = FastAPI(title="MedSR", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.jobs = jobs
    app.add_middleware(RequestGuard, settings=settings)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request, error: RequestValidationError):
        problem = error.errors()[0]
        field = ".".join(str(part) for part in problem["loc"][1:]) or "body"
        return refusal(422, f"The request's field '{field}' is not valid ({problem['msg']}).")

    @app.exception_handler(Exception)
    async def unexpected(request, error: Exception):
        _logger.error("request failed", exc_info=error)
        return refusal(500, f"The server failed unexpectedly ({type(error).__name__}: {first_line(error)}); its log "
                            "has the details.")

    @app.get("/info")
    def info() -> dict:
        return {"medsr_version": __version__, "device": settings.device, "workers": settings.workers,
                "max_upload_mb": settings.max_upload_mb}

    @app.get("/methods")
    def methods() -> dict:
        return methods_and_models()

    @app.post("/jobs", status_code=202)
    def submit(volume: UploadFile = File(...), method: str = Form("bspline"), scale: Optional[str] = Form(None),
               options: str = Form("{}"), output_format: Optional[str] = Form(None)) -> dict:
        folder = jobs.new_folder()
        try:
            job = plan_job(folder, volume, method, scale, options, output_format, settings)
        except MedSRError as error:
            remove_path(folder)
            raise HTTPException(422, str(error)) from None
        except BaseException:
            remove_path(folder)
            raise
        jobs.add(job)
        return job.status()

    @app.get("/jobs/{job_id}")
    def status(job_id: str) -> dict:
        return jobs.find(job_id).status()

    @app.post("/jobs/{job_id}/cancel")
    def cancel(job_id: str) -> dict:
        return jobs.cancel(job_id).status()

    @app.get("/jobs/{job_id}/result")
    def result(job_id: str):
        job = jobs.find(job_id)
        if job.state != JobState.DONE:
            raise HTTPException(409, f"Job '{job_id}' has no result ({job.message.rstrip('.')})." if job.message else
                                f"Job '{job_id}' is {PUBLIC_STATES[job.state]}; download its result once it is done.")
        return FileResponse(job.result_path, media_type="application/octet-stream",
                            filename=f"{job.method}{job.output_format}",
                            background=BackgroundTask(jobs.remove, job_id))

    return app


# --- Starting ------------------------------------------------------------------------------------------------------

def token_file() -> Path:
    """Where a generated token is kept: the user's configuration folder, readable by the user alone."""
    if os.name == "nt":
        base = Path(os.environ.get("APPDATA") or Path.home())
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "medsr" / "server-token"


def server_token(given: Optional[str]) -> tuple:
    """(token, where it came from): ``given``, the environment, the stored file, or a new one stored there."""
    if given:
        return given, "--token"
    if os.environ.get(TOKEN_VARIABLE):
        return os.environ[TOKEN_VARIABLE], TOKEN_VARIABLE
    path = token_file()
    stored = path.read_text(encoding="utf-8").strip() if path.exists() else ""
    if stored:
        return stored, str(path)
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # an empty file (never a valid token): replaced, created anew so that it is 0600
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as stream:
        stream.write(token + "\n")
    return token, None


def serve(host: str = "127.0.0.1", port: int = DEFAULT_PORT, token: Optional[str] = None, device: str = "auto",
          workers: int = DEFAULT_WORKERS, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
          keep_minutes: float = DEFAULT_KEEP_MINUTES) -> None:
    """Run the server until interrupted, printing where it listens and how its token is found."""
    import uvicorn

    if workers < 1:
        raise InputError(f"--workers must be at least 1, not {workers}.")
    if max_upload_mb <= 0:
        raise InputError(f"--max-upload-mb must be positive, not {max_upload_mb:g}.")
    token, source = server_token(token)
    settings = ServerSettings(token, device, workers, max_upload_mb, keep_minutes)
    # Each job's worker process inherits its share of the cores, so that the jobs running together do not fight over
    # them (torch would give each all of them).
    limit_threads(max(1, (os.cpu_count() or 1) // workers))
    say = lambda line: print(f"medsr serve: {line}", file=sys.stderr, flush=True)  # noqa: E731
    say(f"http://{host}:{port} on device {device}, {workers} job(s) at a time, uploads up to {max_upload_mb:g} MB")
    if source is None:
        say(f"new token (stored in {token_file()}, readable by you alone): {token}")
    else:
        say(f"token from {source}")
    if host not in ("127.0.0.1", "localhost", "::1"):
        say(f"listening on {host}: volumes and the token travel unencrypted; across networks use an SSH tunnel or a "
            "TLS reverse proxy")
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning", access_log=False)
