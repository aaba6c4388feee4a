"""The model catalog: which trained checkpoints MedSR knows by name, and where their files come from.

``MedSRLib/models/catalog.json`` is the single source. An entry's weights either ship beside the catalog (``file``) or
are downloaded once from ``url`` into the user cache (``MEDSR_CACHE_DIR``, default ``~/.cache/medsr/models``). Every
file is checked against the entry's SHA-256 before use, including files already in the cache.
"""
import hashlib
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Tuple, Union

from MedSRLib.files import file_sha256, is_sha256_hex, temporary_sibling
from MedSRLib.errors import CheckpointError
from MedSRLib.progress import CancelCheck, ProgressCallback, report
from .scales import ScaleSupport

CATALOG_SCHEMA = 1
DEFAULT_CATALOG = Path(__file__).resolve().parent / "catalog.json"
DOWNLOAD_CHUNK_BYTES = 1 << 20
DOWNLOAD_TIMEOUT_S = 60
# What a model had to reach on the held-out protocol to be published (Training.publish --gate); the first is the
# default, and the gate of entries that name none.
PUBLISH_GATES = ("psnr", "perceptual")
# The kinds of torch device a model can be offered first on (``offered_first_on``).
DEVICE_TYPES = ("cpu", "cuda", "mps")

PathLike = Union[str, Path, None]


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    sha256: str
    description: str
    method: str
    modality: str
    contrast: str
    domain: str
    scales: ScaleSupport
    file: Optional[str] = None
    url: Optional[str] = None
    gate: str = PUBLISH_GATES[0]
    # Device types on which this model is its method's default ahead of the entries listed before it: a fast variant
    # that wins on time at nearly equal quality is offered first where no GPU is present.
    offered_first_on: Tuple[str, ...] = ()


def catalog_path(path: PathLike = None) -> Path:
    """The catalog in use: ``path`` if given, else the MEDSR_CATALOG environment variable, else the shipped one."""
    return Path(path or os.environ.get("MEDSR_CATALOG") or DEFAULT_CATALOG)


def cache_dir() -> Path:
    return Path(os.environ.get("MEDSR_CACHE_DIR") or Path.home() / ".cache" / "medsr" / "models")


def list_models(path: PathLike = None) -> List[CatalogEntry]:
    source = catalog_path(path)
    try:
        document = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"Model catalog '{source}' does not exist.") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"Model catalog '{source}' cannot be read ({error}).") from None
    if not isinstance(document, dict) or document.get("schema") != CATALOG_SCHEMA \
            or not isinstance(document.get("models"), list):
        raise CheckpointError(f"Model catalog '{source}' is not a schema-{CATALOG_SCHEMA} object with a 'models' list.")
    entries = [_parse_entry(item, source) for item in document["models"]]
    names = [entry.name for entry in entries]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise CheckpointError(f"Model catalog '{source}' lists the name(s) {', '.join(duplicates)} more than once.")
    return entries


def find_model(name: str, path: PathLike = None) -> Optional[CatalogEntry]:
    return next((entry for entry in list_models(path) if entry.name == name), None)


def default_model_for(method_name: str, scale_xyz: Iterable[float], path: PathLike = None,
                      axes: str = "3d", device: Optional[str] = None) -> Optional[CatalogEntry]:
    """The first catalog entry trained for this method at this scale, or None; on a ``device`` type ("cpu", "cuda",
    "mps"), entries offered first on it come before the others. ``axes`` is how the method's models run: 2D in-plane
    models serve their in-plane factors on any slice axis (the checkpoint says which it was trained on; the catalog
    does not, so every one is tried here), through-plane models their thick factor along any axis."""
    scale = tuple(scale_xyz)

    def serves(entry: CatalogEntry) -> bool:
        if axes == "2d-in-plane":
            return any(entry.scales.serves_in_plane(scale, axis) is not None for axis in range(3))
        if axes == "2d-through-plane":
            return entry.scales.serves_through_plane(scale)
        return entry.scales.contains(scale)

    candidates = [entry for entry in list_models(path) if entry.method == method_name and serves(entry)]
    candidates.sort(key=lambda entry: device not in entry.offered_first_on)  # stable: catalog order otherwise
    return candidates[0] if candidates else None


def resolve_model(name: str, path: PathLike = None, progress: Optional[ProgressCallback] = None,
                  cancel: Optional[CancelCheck] = None) -> Path:
    """The verified local checkpoint file of a catalog model, downloading it into the cache when needed.

    ``progress`` receives (bytes done, bytes total) while downloading, when the server tells the size.
    """
    source = catalog_path(path)
    entry = find_model(name, source)
    if entry is None:
        names = ", ".join(model.name for model in list_models(source)) or "none yet"
        raise CheckpointError(f"No model named '{name}' in the catalog (available: {names}).")

    if entry.file:
        shipped = source.parent / entry.file
        if shipped.is_file():
            if file_sha256(shipped) != entry.sha256:
                raise CheckpointError(f"The shipped file of model '{name}' ({shipped}) fails its checksum; "
                                      "reinstall MedSR.")
            return shipped
        if not entry.url:
            raise CheckpointError(f"The file of model '{name}' ({shipped}) is missing; reinstall MedSR.")

    cached = cache_dir() / f"{entry.name}-{entry.sha256[:16]}.safetensors"
    if cached.is_file():
        if file_sha256(cached) == entry.sha256:
            return cached
        cached.unlink(missing_ok=True)  # damaged since it was downloaded: fetch it again
    _download(entry, cached, progress, cancel)
    return cached


def _download(entry: CatalogEntry, destination: Path, progress: Optional[ProgressCallback],
              cancel: Optional[CancelCheck]) -> None:
    """Stream ``entry.url`` into a temporary file beside ``destination``; rename it into place only if it verifies."""
    temporary = temporary_sibling(destination)
    digest = hashlib.sha256()
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(entry.url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(temporary, "xb") as sink:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            for chunk in iter(lambda: response.read(DOWNLOAD_CHUNK_BYTES), b""):
                sink.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                report(done, total, progress if total else None, cancel)
        if digest.hexdigest() != entry.sha256:
            raise CheckpointError(f"The download of model '{entry.name}' from {entry.url} does not match the catalog "
                                  "checksum and was deleted; try again later or report the catalog entry.")
        os.replace(temporary, destination)
    except urllib.error.HTTPError as error:
        raise CheckpointError(f"Downloading model '{entry.name}' from {entry.url} failed (HTTP {error.code} "
                              f"{error.reason}); check the address or try again later.") from None
    except (urllib.error.URLError, OSError) as error:  # network failures, and writing into the cache
        reason = getattr(error, "reason", error)
        raise CheckpointError(f"Downloading model '{entry.name}' from {entry.url} failed ({reason}); check the network "
                              f"connection and that {destination.parent} is writable.") from None
    finally:
        if temporary.exists():
            temporary.unlink()


def _parse_entry(item, source: Path) -> CatalogEntry:
    where = f"model catalog '{source}'"
    if not isinstance(item, dict):
        raise CheckpointError(f"In {where}, every model entry must be a JSON object.")
    label = item.get("name") if isinstance(item.get("name"), str) else "?"
    for field in ("name", "sha256", "description", "method", "modality", "contrast", "domain"):
        if not isinstance(item.get(field), str) or not item[field]:
            raise CheckpointError(f"In {where}, model '{label}' lacks the text field '{field}'.")
    for field in ("file", "url"):
        if item.get(field) is not None and (not isinstance(item[field], str) or not item[field]):
            raise CheckpointError(f"In {where}, model '{label}' has a malformed '{field}'.")
    if not item.get("file") and not item.get("url"):
        raise CheckpointError(f"In {where}, model '{label}' needs a 'file' or a 'url'.")
    if item.get("url") and not item["url"].startswith(("https://", "http://")):
        raise CheckpointError(f"In {where}, model '{label}' has a url that is not http(s).")
    sha256 = item["sha256"].lower()
    if not is_sha256_hex(sha256):
        raise CheckpointError(f"In {where}, model '{label}' has a 'sha256' that is not a SHA-256 hex digest.")
    gate = item.get("gate", PUBLISH_GATES[0])
    if gate not in PUBLISH_GATES:
        raise CheckpointError(f"In {where}, model '{label}' has the gate {gate!r}, not one of "
                              f"{', '.join(PUBLISH_GATES)}.")
    offered_first_on = item.get("offered_first_on", [])
    if not isinstance(offered_first_on, list) or not set(offered_first_on) <= set(DEVICE_TYPES):
        raise CheckpointError(f"In {where}, model '{label}' has an 'offered_first_on' that is not a list of "
                              f"{', '.join(DEVICE_TYPES)}.")
    return CatalogEntry(name=item["name"], sha256=sha256, description=item["description"], method=item["method"],
                        modality=item["modality"], contrast=item["contrast"], domain=item["domain"],
                        scales=ScaleSupport.from_document(item, f"{where}, model '{label}'"),
                        file=item.get("file"), url=item.get("url"), gate=gate,
                        offered_first_on=tuple(offered_first_on))
