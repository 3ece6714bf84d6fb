"""The experiments of the book as package code.

One module per experiment, each with ``run(params) -> metrics`` and ``claims(...)``:
:mod:`.conditioning`, :mod:`.dto`, :mod:`.degree_sweep`, :mod:`.node`, :mod:`.stationary`
(and :mod:`.data_overview` for the data page). :mod:`.rules` holds every verdict rule,
:mod:`.schema` the results record (:class:`RunResults`, :class:`Claim`,
:class:`DataSource`), :mod:`.plots` the plotting helpers and :mod:`.common` what the
experiments share (data loading with provenance, statistics, formatting).
"""

from .rules import RULES, VERDICTS, Decision
from .schema import (Claim, DataSource, RunResults, SchemaError, make_claim, read_run,
                     read_runs, write_run)

__all__ = ["RULES", "VERDICTS", "Decision", "Claim", "DataSource", "RunResults", "SchemaError",
           "make_claim", "read_run", "read_runs", "write_run"]
