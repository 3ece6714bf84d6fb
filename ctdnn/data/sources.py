"""The paper's data files: pinned addresses, integrity checks and retrieval.

A paper file is looked for, in order, in

1. ``$CTDNN_DATA_DIR/<file>`` (a folder the user points at; never modified),
2. the user cache ``<cache>/paper/<file>`` (see :mod:`ctdnn.data.cache`),
3. its pinned public address, downloaded into the cache (skipped when
   ``CTDNN_OFFLINE=1``).

Downloads go through a ``pooch.create`` registry of the pinned files
(:func:`registry`): pooch streams each file to a temporary name, checks its
sha256 where one is published, retries a failed download and only then moves
it into place; a bad download never reaches its final name.

A file is used only after it passes its check (:func:`verify`): the sha256
digest where one is published (ELM, CDR), and for every file the names and
shapes of the MATLAB variables and that their values are finite. A bad file in
``CTDNN_DATA_DIR`` raises :class:`~ctdnn.data.DataIntegrityError`; a bad file in the cache
is deleted and fetched again.
"""

from __future__ import annotations

import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .cache import normal_permissions, paper_cache_dir

#: Seconds to wait for the server to connect or to send the next chunk.
DOWNLOAD_TIMEOUT = 30

#: Further attempts after a failed download (a connection error or a checksum mismatch);
#: pooch waits 1, 2, 3, ... s between attempts.
DOWNLOAD_RETRIES = 3

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
    """The :class:`~ctdnn.data.PaperFile` of a data set (name case-insensitive)."""
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
    """Hex sha256 digest of a file (``pooch.file_hash``)."""
    import pooch

    return pooch.file_hash(str(path), alg="sha256")


def verify(spec: PaperFile, path: str | os.PathLike, *, label: str | None = None) -> str:
    """Check that ``path`` holds ``spec``'s file; return its sha256.

    Args:
        spec: the expected file.
        path: file to check.
        label: how to name the file in messages (default: its path).

    Raises:
        DataIntegrityError: digest mismatch; not a readable MATLAB v5 file;
            a variable missing, of the wrong shape, or holding NaN or inf.
    """
    path = Path(path)
    label = label or str(path)
    actual = sha256sum(path)
    if spec.sha256 is not None and actual != spec.sha256:
        raise DataIntegrityError(
            f"{label} is not a valid copy of {spec.filename} ({spec.name}): "
            f"expected sha256 {spec.sha256}, got {actual}; "
            f"replace it with the file from {spec.url} or remove it"
        )
    problems = check_contents(spec, read_mat(spec, path, label))
    if problems:
        raise DataIntegrityError(
            f"{label} is not a valid copy of {spec.filename} ({spec.name}): "
            f"{'; '.join(problems)} (sha256 {actual}); "
            f"replace it with the file from {spec.url} or remove it"
        )
    return actual


def check_contents(spec: PaperFile, variables: dict[str, np.ndarray]) -> list[str]:
    """What is wrong with the MATLAB variables of a paper file (empty if nothing).

    Every expected variable must be present with its expected shape, and hold
    finite numbers only.
    """
    problems = []
    for var, shape in spec.variables.items():
        if var not in variables:
            problems.append(f"variable {var} is missing")
            continue
        value = np.asarray(variables[var])
        if tuple(value.shape) != tuple(shape):
            problems.append(f"variable {var} has shape {tuple(value.shape)}, "
                            f"expected {tuple(shape)}")
        elif not np.issubdtype(value.dtype, np.number):
            problems.append(f"variable {var} holds {value.dtype} values, expected numbers")
        else:
            bad = int(value.size - np.count_nonzero(np.isfinite(value)))
            if bad:
                problems.append(f"variable {var} holds {bad} non-finite value(s) (NaN or inf)")
    return problems


def read_mat(spec: PaperFile, path: str | os.PathLike, label: str | None = None) -> dict:
    """The expected MATLAB variables of ``path`` (those present), as numpy arrays.

    Raises:
        DataIntegrityError: not a MATLAB v5/v7 file scipy can read.
    """
    import scipy.io

    label = label or str(path)
    try:
        return scipy.io.loadmat(str(path), variable_names=list(spec.variables))
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


def registry():
    """The ``pooch.create`` registry of the paper's files.

    Its folder is ``<cache>/paper`` (the cache root honours
    ``CTDNN_CACHE_DIR``, read at each call), its registry the published
    sha256 digests (none for DCR, checked by :func:`verify` instead), its
    addresses the pinned URLs, and it retries a failed download
    ``DOWNLOAD_RETRIES`` times.
    """
    import pooch

    return pooch.create(
        path=paper_cache_dir(),
        base_url="",
        registry={spec.filename: f"sha256:{spec.sha256}" if spec.sha256 else None
                  for spec in PAPER_FILES.values()},
        urls={spec.filename: spec.url for spec in PAPER_FILES.values()},
        retry_if_failed=DOWNLOAD_RETRIES,
    )


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
        reason = (f"{not_found_phrase(spec)}, and downloads are disabled (CTDNN_OFFLINE=1), "
                  f"so {spec.url} was not tried")
        raise DataUnavailableError(unavailable_message(spec, reason), reason=reason)
    target = cache_path(spec)
    if force:
        target.unlink(missing_ok=True)
    try:
        path = Path(_download(spec, progress))
    except DataIntegrityError as err:
        reason = f"the file downloaded from {spec.url} failed its check ({err})"
        raise DataUnavailableError(unavailable_message(spec, reason), reason=reason) from err
    except Exception as err:
        reason = (f"{not_found_phrase(spec)}, and the download from {spec.url} failed "
                  f"({type(err).__name__}: {err})")
        raise DataUnavailableError(unavailable_message(spec, reason), reason=reason) from err
    return Located(path, "download", sha256sum(path))


def _download(spec: PaperFile, progress: bool) -> str:
    import pooch

    http = pooch.HTTPDownloader(progressbar=bool(progress), timeout=DOWNLOAD_TIMEOUT)

    def checked(url: str, output_file, pooch_obj) -> None:
        # pooch passes a temporary name and checks a published digest itself (retrying
        # on a mismatch); a file without one is checked here, before pooch moves it into
        # place, so that a bad download never gets the final name either.
        http(url, output_file, pooch_obj)
        if spec.sha256 is None:
            verify(spec, output_file, label=f"the file downloaded from {url}")

    def permissions(fname: str, action: str, pooch_obj) -> str:
        # pooch's temporary files are private (0600); a cached data file is not secret.
        if action in ("download", "update"):
            normal_permissions(fname)
        return fname

    return registry().fetch(spec.filename, downloader=checked, processor=permissions,
                            progressbar=bool(progress))


def not_found_phrase(spec: PaperFile) -> str:
    """Where ``spec``'s file was looked for on disk, for messages.

    Names ``CTDNN_DATA_DIR`` (and whether that folder exists) and the cache
    folder, e.g. ``"DCR_Data.mat is in none of the folders searched
    (CTDNN_DATA_DIR=/data/ctdnn, which does not exist; the cache /c/paper)"``.
    """
    folder = data_dir()
    searched = []
    if folder is None:
        searched.append("CTDNN_DATA_DIR is not set")
    elif not folder.is_dir():
        searched.append(f"CTDNN_DATA_DIR={folder}, which does not exist")
    else:
        searched.append(f"CTDNN_DATA_DIR={folder}")
    searched.append(f"the cache {cache_path(spec).parent}")
    return f"{spec.filename} is in none of the folders searched ({'; '.join(searched)})"


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
    """The MATLAB variables of a paper file, as numpy arrays, checked again.

    The contents are checked once more after reading (shapes and finite
    values), so a file changed between :func:`~ctdnn.data.fetch` and this call is refused
    too.

    Raises:
        DataIntegrityError: the contents fail the check of :func:`verify`.
    """
    spec = paper_file(name)
    mat = read_mat(spec, path)
    problems = check_contents(spec, mat)
    if problems:
        raise DataIntegrityError(
            f"{path} is not a valid copy of {spec.filename} ({spec.name}): "
            f"{'; '.join(problems)}; replace it with the file from {spec.url} or remove it"
        )
    return mat
