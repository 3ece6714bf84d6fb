"""Data sets of the paper (ELM, CDR, DCR): the published files or simulated stand-ins.

>>> from ctdnn.data import load
>>> data = load("CDR", source="paper", seed=0)       # doctest: +SKIP
>>> data.x_train.shape, data.meta["source"]          # doctest: +SKIP

See :func:`ctdnn.data.load` for the sources and :mod:`ctdnn.data.dataset` for splits and
normalisation.
"""

from .cache import cache_dir
from .dataset import (
    DATASETS,
    PAPER_N_SAMPLES,
    SPLIT_RULES,
    AffineMap,
    Dataset,
    DataSourceWarning,
    load,
    simulate,
    split_sizes,
)
from .sources import (
    PAPER_FILES,
    DataError,
    DataIntegrityError,
    DataUnavailableError,
    PaperFile,
    fetch,
)

__all__ = [
    "DATASETS",
    "PAPER_FILES",
    "PAPER_N_SAMPLES",
    "SPLIT_RULES",
    "AffineMap",
    "DataError",
    "DataIntegrityError",
    "DataSourceWarning",
    "DataUnavailableError",
    "Dataset",
    "PaperFile",
    "cache_dir",
    "fetch",
    "load",
    "simulate",
    "split_sizes",
]
