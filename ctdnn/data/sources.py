"""The paper's data files: pinned addresses, integrity checks and retrieval.

A paper file is looked for, in order, in

1. ``$CTDNN_DATA_DIR/<file>`` (a folder the user points at; never modified),
2. the user cache ``<cache>/paper/<file>`` (see :mod:`ctdnn.data.cache`),
3. its pinned public address, downloaded with pooch into the cache (skipped when
   ``CTDNN_OFFLINE=1``).

A file is used only after it passes its check: the sha256 digest where one is
published (ELM, CDR), otherwise the names and shapes of the MATLAB variables
(DCR). A bad file in ``CTDNN_DATA_DIR`` raises :class:`DataIntegrityError`; a
bad file in the cache is deleted and fetched again; a bad download is discarded
before it reaches its final name.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from .cache import atomic_write, paper_cache_dir

#: Seconds to wait for the server to connect or to send the next chunk.
DOWNLOAD_TIMEOUT = 30

_GITHUB_BASE = (
    "https://raw.githubusercontent.com/hrosso710/Continuous_DNN_Surrogates_Revised/"
    "218b73f375ab1a09119aace110fd832517931a77/python/surrogate/data/"
)


class DataError(RuntimeError):
    """Base class of the errors raised while obtaining data."""


class DataUnavailableError(DataError):
    """A paper file is neither on disk nor downloadable (offline, or the download failed).

    Attributes:
        reason: short phrase saying why (e.g. that downloads are disabled).
    """

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason or message


class DataIntegrityError(DataError):
    """A file exists but is not the expected one (checksum or contents differ)."""


@dataclass(frozen=True)
class PaperFile:
    """Where one of the paper's data files comes from and how to recognise it.

    Attributes:
        name: data set name (``"ELM"``, ``"CDR"``, ``"DCR"``).
        filename: file name on disk.
        url: pinned download address.
        sha256: published digest, or ``None`` where none is known.
        variables: MATLAB variable name -> expected shape.
        origin: where the file is published, for messages.
    """

    name: str
    filename: str
    url: str
    sha256: str | None
    variables: dict[str, tuple[int, ...]] = field(default_factory=dict)
    origin: str = ""


PAPER_FILES: dict[str, PaperFile] = {
    "ELM": PaperFile(
        name="ELM",
        filename="NNERDS.mat",
        url=_GITHUB_BASE + "NNERDS.mat",
        sha256="e0b1daed8b835eab8595a87e20798c17dc251cf569c35f6eac6120dcaf906bb2",
        variables={
            "xall": (2486, 15),
            "yall": (2486, 10),
            "paramrange": (15, 2),
            "idtrain": (1, 1740),
            "idval": (1, 497),
            "idtest": (1, 249),
        },
        origin="GitHub hrosso710/Continuous_DNN_Surrogates_Revised (commit 218b73f)",
    ),
    "CDR": PaperFile(
        name="CDR",
        filename="CDR_Data.mat",
        url=_GITHUB_BASE + "CDR_Data.mat",
        sha256="1a19f4f69636ec6f0eac0de2bc73bc38b6a3d27e39f155f55b8c036b499d042a",
        variables={"Y": (55, 800), "C": (72, 800)},
        origin="GitHub hrosso710/Continuous_DNN_Surrogates_Revised (commit 218b73f)",
    ),
    "DCR": PaperFile(
        name="DCR",
        filename="DCR_Data.mat",
        url="https://zenodo.org/records/21537966/files/DCR_Data.mat?download=1",
        sha256=None,
        variables={"Y": (3, 10000), "C": (882, 10000)},
        origin="Zenodo, DOI 10.5281/zenodo.21537966",
    ),
}


class Located(NamedTuple):
    """A verified paper file: its path, where it was found, and its sha256."""

    path: Path
    location: str  # "CTDNN_DATA_DIR", "cache" or "download"
    sha256: str


def paper_file(name: str) -> PaperFile:
    """The :class:`PaperFile` of a data set (name case-insensitive)."""
    key = str(name).upper()
    if key not in PAPER_FILES:
        raise ValueError(
            f"unknown data set {name!r}; valid names are {', '.join(PAPER_FILES)}"
        )
    return PAPER_FILES[key]


def is_offline() -> bool:
    """Whether downloads are disabled (``CTDNN_OFFLINE`` set to 1/true/yes/on)."""
    return os.environ.get("CTDNN_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def data_dir() -> Path | None:
    """The folder named by ``CTDNN_DATA_DIR``, or ``None`` when unset."""
    value = os.environ.get("CTDNN_DATA_DIR", "").strip()
    return Path(value).expanduser() if value else None


def cache_path(spec: PaperFile) -> Path:
    """Where the cache keeps ``spec``'s file."""
    return paper_cache_dir() / spec.filename


def sha256sum(path: str | os.PathLike) -> str:
    """Hex sha256 digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(spec: PaperFile, path: str | os.PathLike, *, label: str | None = None) -> str:
    """Check that ``path`` holds ``spec``'s file; return its sha256.

    Args:
        spec: the expected file.
        path: file to check.
        label: how to name the file in messages (default: its path).

    Raises:
        DataIntegrityError: digest mismatch, or (no digest known) missing
            variables or wrong shapes.
    """
    path = Path(path)
    label = label or str(path)
    actual = sha256sum(path)
    if spec.sha256 is not None:
        if actual != spec.sha256:
            raise DataIntegrityError(
                f"{label} is not a valid copy of {spec.filename} ({spec.name}): "
                f"expected sha256 {spec.sha256}, got {actual}; "
                f"replace it with the file from {spec.url} or remove it"
            )
        return actual
    found = _mat_variables(spec, path, label)
    problems = []
    for var, shape in spec.variables.items():
        if var not in found:
            problems.append(f"{var} missing")
        elif tuple(found[var]) != tuple(shape):
            problems.append(f"{var} has shape {tuple(found[var])}, expected {tuple(shape)}")
    if problems:
        raise DataIntegrityError(
            f"{label} is not a valid copy of {spec.filename} ({spec.name}): "
            f"{'; '.join(problems)} (sha256 {actual}); "
            f"replace it with the file from {spec.url} or remove it"
        )
    return actual


def _mat_variables(spec: PaperFile, path: Path, label: str) -> dict[str, tuple[int, ...]]:
    import scipy.io

    try:
        return {name: tuple(shape) for name, shape, _ in scipy.io.whosmat(str(path))}
    except NotImplementedError as err:  # MATLAB v7.3 (HDF5) files
        raise DataIntegrityError(
            f"{label} is a MATLAB v7.3 (HDF5) file, which scipy.io cannot read; "
            f"{spec.filename} must be saved as MATLAB v5/v7 ({err})"
        ) from err
    except Exception as err:  # truncated or not a MAT file at all
        raise DataIntegrityError(
            f"{label} is not a readable MATLAB file ({type(err).__name__}: {err}); "
            f"expected {spec.filename} ({spec.name}) from {spec.url}"
        ) from err


def locate(name: str) -> Located | None:
    """Find a verified copy of a paper file on disk, without downloading.

    Looks in ``CTDNN_DATA_DIR`` and then in the cache. A corrupt cached copy
    is deleted (with a warning) so that the next fetch replaces it.

    Raises:
        DataIntegrityError: the copy in ``CTDNN_DATA_DIR`` fails its check.
    """
    spec = paper_file(name)
    folder = data_dir()
    if folder is not None:
        candidate = folder / spec.filename
        if candidate.is_file():
            return Located(candidate, "CTDNN_DATA_DIR", verify(spec, candidate))
    candidate = cache_path(spec)
    if candidate.is_file():
        try:
            digest = verify(spec, candidate)
        except DataIntegrityError as err:
            warnings.warn(f"removing a corrupt cached file: {err}", stacklevel=2)
            candidate.unlink(missing_ok=True)
        else:
            return Located(candidate, "cache", digest)
    return None


def fetch(name: str, *, force: bool = False, progress: bool = True) -> Located:
    """Return a verified paper file, downloading it into the cache if needed.

    Args:
        name: data set name.
        force: download again into the cache even if a copy is on disk.
        progress: show a download progress bar.

    Raises:
        DataUnavailableError: not on disk, and offline or the download failed
            (including a download that fails its check; it is discarded).
        DataIntegrityError: the copy in ``CTDNN_DATA_DIR`` fails its check.
    """
    spec = paper_file(name)
    if not force:
        found = locate(spec.name)
        if found is not None:
            return found
    if is_offline():
        raise DataUnavailableError(
            unavailable_message(spec, "downloads are disabled (CTDNN_OFFLINE=1)"),
            reason="downloads are disabled (CTDNN_OFFLINE=1)",
        )
    target = cache_path(spec)
    try:
        digest = _download(spec, target, progress)
    except DataIntegrityError as err:
        reason = f"the downloaded file failed its check ({err})"
        raise DataUnavailableError(unavailable_message(spec, reason), reason=reason) from err
    except Exception as err:
        reason = f"the download failed ({type(err).__name__}: {err})"
        raise DataUnavailableError(unavailable_message(spec, reason), reason=reason) from err
    return Located(target, "download", digest)


def _download(spec: PaperFile, target: Path, progress: bool) -> str:
    import pooch

    downloader = pooch.HTTPDownloader(progressbar=bool(progress), timeout=DOWNLOAD_TIMEOUT)
    with atomic_write(target) as tmp:
        downloader(spec.url, str(tmp), None)
        # Checked before the rename, so a bad download never gets the final name.
        return verify(spec, tmp, label=f"the file downloaded from {spec.url}")


def unavailable_message(spec: PaperFile, reason: str) -> str:
    """One-line explanation of how to obtain a missing paper file."""
    folder = data_dir()
    where_dir = f"CTDNN_DATA_DIR (now {folder})" if folder else "a folder named by CTDNN_DATA_DIR"
    digest = f", sha256 {spec.sha256}" if spec.sha256 else ""
    return (
        f"{spec.filename} ({spec.name} paper data) is not available: {reason}. "
        f"Put the file in {where_dir} or at {cache_path(spec)}; "
        f"it is published at {spec.url} ({spec.origin}{digest}). "
        f'Alternatively load(..., source="simulated") generates {spec.name}-like data offline.'
    )


def read_paper(name: str, path: str | os.PathLike) -> dict:
    """The MATLAB variables of a verified paper file, as numpy arrays."""
    import scipy.io

    spec = paper_file(name)
    return scipy.io.loadmat(str(path), variable_names=list(spec.variables))
