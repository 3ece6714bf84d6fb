"""The experiments of the book as package code.

One module per experiment, each with ``run(params) -> metrics`` and ``claims(...)``:
:mod:`.conditioning`, :mod:`.dto`, :mod:`.degree_sweep`, :mod:`.node`, :mod:`.stationary`
(and :mod:`.data_overview` for the data page), and :mod:`.bases_beyond`, which goes beyond
the paper (three more bases, four adaptive solvers), and :mod:`.standins`, which decides the
claims of the DTO, degree-sweep and neural-ODE pages on the paper's data and on the simulators
and measures how far the simulated stand-ins agree. :mod:`.table5` archives the neural-ODE
surrogates (and the DTO networks of Table 2) trained at the authors' protocol and compares them
with the authors' published result files; :mod:`.fidelity` measures the effect of each
difference between ``ctdnn`` and the authors' code. :mod:`.rules` holds every verdict rule
(those of :mod:`.bases_beyond` are defined there and registered in the same table),
:mod:`.schema` the results record (:class:`RunResults`, :class:`Claim`,
:class:`DataSource`), :mod:`.plots` the plotting helpers and :mod:`.common` what the
experiments share (data loading with provenance, statistics, formatting).
"""

from .rules import RULES, VERDICTS, Decision
from .schema import (Claim, DataSource, RunResults, SchemaError, make_claim, read_run,
                     read_runs, write_run)

__all__ = ["RULES", "VERDICTS", "Decision", "Claim", "DataSource", "RunResults", "SchemaError",
           "make_claim", "read_run", "read_runs", "write_run"]
