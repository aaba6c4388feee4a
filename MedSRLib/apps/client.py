"""A client of ``medsr serve`` (standard library only, so it works in 3D Slicer's Python and on any laptop).

:class:`ServerClient` uploads a volume file (or a DICOM series folder, zipped on the way), follows the job's progress,
cancels it and downloads the result; :meth:`ServerClient.super_resolve_file` does all of it in one blocking call, as
``medsr super-resolve --server URL`` does. Every refusal of the server is raised as a :class:`MedSRError` (an
:class:`InputError` for a bad request) carrying the server's one sentence.
"""
import io
import json
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, List, Optional

from MedSRLib.errors import Cancelled, InputError, MedSRError
from MedSRLib.files import temporary_sibling
from MedSRLib.io.volume_files import check_output_path, output_extension
from MedSRLib.progress import CancelCheck, ProgressCallback

TOKEN_VARIABLE = "MEDSR_SERVER_TOKEN"
DEFAULT_PORT = 8765
REQUEST_TIMEOUT_S = 300  # uploads and downloads of large volumes over slow links
POLL_INTERVAL_S = 0.5
COPY_CHUNK_BYTES = 1 << 20
# The statuses whose sentence is about the request (InputError); any other refusal is a MedSRError.
REQUEST_ERRORS = {404, 409, 413, 422}
ENDED_STATES = ("done", "failed", "cancelled")


def upload_too_large(max_upload_mb: float) -> str:
    """The sentence of the server's 413, also said by a client before it uploads a file the server would refuse."""
    return f"The upload is larger than this server's limit of {max_upload_mb:g} MB (medsr serve --max-upload-mb)."


class ChainedReader(io.RawIOBase):
    """Several binary streams read one after the other: a multipart body streamed from the volume file on disk."""

    def __init__(self, streams: List[BinaryIO]):
        self.streams = streams

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self.streams:
            count = self.streams[0].readinto(buffer)
            if count:
                return count
            self.streams.pop(0).close()
        return 0


class ServerClient:
    """Jobs on the MedSR server at ``url`` (e.g. http://127.0.0.1:8765), authenticated by ``token`` (default:
    the MEDSR_SERVER_TOKEN environment variable)."""

    def __init__(self, url: str, token: Optional[str] = None, timeout_s: float = REQUEST_TIMEOUT_S):
        self.url = url.rstrip("/")
        self.token = token or os.environ.get(TOKEN_VARIABLE)
        if not self.token:
            raise InputError(f"A MedSR server needs its token: give --token or set {TOKEN_VARIABLE}.")
        self.timeout_s = timeout_s
        self._info: Optional[dict] = None

    def info(self) -> dict:
        """{"medsr_version", "device", "workers", "max_upload_mb"} of the server (asked once)."""
        if self._info is None:
            self._info = self._json("GET", "/info")
        return self._info

    def methods(self) -> dict:
        """The server's methods and models, as ``medsr methods --json`` lists them there."""
        return self._json("GET", "/methods")

    def submit(self, input_path, method: str = "bspline", scale=None, output_format: Optional[str] = None,
               **options) -> dict:
        """Upload ``input_path`` (a volume file, or a DICOM series folder) for super-resolution with ``method`` and
        ``scale`` ("2", "1,1,3", "auto", a number or an (x, y, z) triple; None: as ``medsr super-resolve``) and
        ``super_resolve``'s keyword ``options``; the result comes back as ``output_format`` (".nii.gz", …; default:
        the upload's format). Returns the job's status (its "id" names it)."""
        fields = {"method": method, "options": json.dumps(options)}
        if scale is not None:
            fields["scale"] = ",".join(map(str, scale)) if isinstance(scale, (tuple, list)) else str(scale)
        if output_format:
            fields["output_format"] = output_format
        with opened_upload(input_path) as (upload, filename):
            body = multipart_body(fields, "volume", filename, upload)
            # Refused here too: the server answers 413 before reading the body and closes the connection under the
            # upload, so that a client that is still sending sees a reset connection rather than the sentence.
            limit_mb = self.info()["max_upload_mb"]
            if body[2] > limit_mb * 2 ** 20:
                raise InputError(upload_too_large(limit_mb))
            return self._json("POST", "/jobs", body)

    def status(self, job_id: str) -> dict:
        """{"id", "state" (queued, running, done, failed, cancelled), "stage", "progress": [done, total], "message",
        and once done "result": {"size", "spacing", "metadata"}}."""
        return self._json("GET", job_path(job_id))

    def cancel(self, job_id: str) -> dict:
        return self._json("POST", job_path(job_id, "/cancel"))

    def wait(self, job_id: str, progress: Optional[ProgressCallback] = None, cancel: Optional[CancelCheck] = None,
             poll_interval_s: float = POLL_INTERVAL_S) -> dict:
        """Poll until the job ends; ``progress`` gets its (done, total). Returns the status of a done job; raises
        :class:`Cancelled` (the job cancelled on the server too) or :class:`MedSRError` with the server's sentence."""
        reported = None
        while True:
            status = self.status(job_id)
            if progress is not None and status["progress"][1] > 0 and status["progress"] != reported:
                reported = status["progress"]
                progress(*reported)
            if status["state"] in ENDED_STATES:
                break
            if cancel is not None and cancel():
                status = self.cancel(job_id)
                break
            time.sleep(poll_interval_s)
        if status["state"] == "cancelled":
            raise Cancelled(status["message"])
        if status["state"] == "failed":
            raise MedSRError(status["message"])
        return status

    def download(self, job_id: str, output_path) -> None:
        """Write the job's result to ``output_path`` atomically (the server then removes its copy)."""
        output_path = Path(check_output_path(output_path))
        partial = temporary_sibling(output_path)
        try:
            with self._open("GET", job_path(job_id, "/result")) as response, open(partial, "wb") as stream:
                shutil.copyfileobj(response, stream, COPY_CHUNK_BYTES)
            os.replace(partial, output_path)
        finally:
            partial.unlink(missing_ok=True)

    def super_resolve_file(self, input_path, output_path, method: str = "bspline", scale=None,
                           progress: Optional[ProgressCallback] = None, cancel: Optional[CancelCheck] = None,
                           **options) -> dict:
        """Upload, wait and download: ``output_path`` (its extension chooses the format) gets the server's result.
        Returns the done job's status. An interrupted wait (Ctrl-C) cancels the job on the server."""
        output_format = output_extension(check_output_path(output_path))
        job = self.submit(input_path, method, scale, output_format, **options)
        try:
            status = self.wait(job["id"], progress, cancel)
        except KeyboardInterrupt:
            self.cancel(job["id"])
            raise
        self.download(job["id"], output_path)
        return status

    def _json(self, method: str, path: str, body=None) -> dict:
        with self._open(method, path, body) as response:
            return json.load(response)

    def _open(self, method: str, path: str, body=None):
        headers = {"Authorization": f"Bearer {self.token}"}
        data = None
        if body is not None:
            data, content_type, length = body
            headers.update({"Content-Type": content_type, "Content-Length": str(length)})
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            return urllib.request.urlopen(request, timeout=self.timeout_s)
        except urllib.error.HTTPError as error:
            raise server_error(error) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise MedSRError(f"Could not reach the MedSR server at {self.url} ({reason}); is `medsr serve` running "
                             "there, and the SSH tunnel open if there is one?") from None


def job_path(job_id: str, action: str = "") -> str:
    return f"/jobs/{urllib.parse.quote(job_id, safe='')}{action}"


def server_error(error: urllib.error.HTTPError) -> MedSRError:
    """The server's one sentence as the matching MedSR error (a proxy's page in place of JSON: its status line)."""
    try:
        detail = json.loads(error.read().decode("utf-8"))["detail"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        detail = f"The server answered {error.code} {error.reason}."
    return (InputError if error.code in REQUEST_ERRORS else MedSRError)(str(detail))


@contextmanager
def opened_upload(path):
    """``with opened_upload(path) as (stream, filename)``: a volume file, or a DICOM series folder zipped into a
    temporary file that is removed afterwards."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"Input '{path}' does not exist.")
    if not path.is_dir():
        with open(path, "rb") as stream:
            yield stream, path.name
        return
    with tempfile.TemporaryDirectory(prefix="medsr-upload-") as folder:
        zipped = Path(folder) / f"{path.name}.zip"
        with zipfile.ZipFile(zipped, "w") as archive:
            for file in sorted(item for item in path.iterdir() if item.is_file()):
                archive.write(file, file.name)
        with open(zipped, "rb") as stream:
            yield stream, zipped.name


def multipart_body(fields: dict, file_field: str, filename: str, stream: BinaryIO):
    """(readable body, content type, length) of a multipart/form-data request: the text ``fields``, then the file,
    streamed from ``stream`` rather than held in memory."""
    boundary = uuid.uuid4().hex
    safe_name = urllib.parse.quote(filename)  # no quote or line break can end the header early
    head = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
                    for name, value in fields.items())
    head += (f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{safe_name}"\r\n'
             "Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    size = os.fstat(stream.fileno()).st_size
    body = io.BufferedReader(ChainedReader([io.BytesIO(head), stream, io.BytesIO(tail)]))
    return body, f"multipart/form-data; boundary={boundary}", len(head) + size + len(tail)
