"""Small file helpers shared by checkpoints, the model catalog and the data cache."""
import hashlib
import uuid
from pathlib import Path
from typing import Union


def temporary_sibling(path: Path) -> Path:
    """A fresh hidden name beside ``path``, so that os.replace onto ``path`` is atomic (same file system)."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.partial")


def file_sha256(path: Union[str, Path], chunk_bytes: int = 1 << 20) -> str:
    """SHA-256 of a file's content, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_sha256_hex(text: str) -> bool:
    return len(text) == 64 and all(character in "0123456789abcdef" for character in text)
