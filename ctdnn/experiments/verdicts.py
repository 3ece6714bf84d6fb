"""List every claim of a results folder: ``python -m ctdnn.experiments.verdicts DIR [DIR2]``.

With one folder, prints one line per claim (claim id, data set, verdict). With two (for
example a build before and after a change), prints the claims of both side by side and marks
those whose verdict changed. Files of the earlier layout are read as well. ``--rejudge``
decides the claims of one folder again with the current rules, from the numbers stored in its
files (no training), and prints the stored and the new verdict with the new rule's reason.
"""

from __future__ import annotations

import argparse
import sys

from .schema import SchemaError, read_runs

__all__ = ["verdict_rows", "main"]


def verdict_rows(directory) -> dict[str, tuple[str, str, str]]:
    """``{claim id: (run, data set, verdict)}`` of every claim in a results folder."""
    rows = {}
    for r in read_runs(directory):
        for c in r.claims:
            rows[c.id] = (r.run, c.dataset or "-", c.verdict)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ctdnn.experiments.verdicts",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="results folder(s): one, or before and after")
    parser.add_argument("--rejudge", action="store_true",
                        help="decide the claims of one folder again with the current rules")
    args = parser.parse_args(argv)
    if args.rejudge:
        if len(args.results) != 1:
            parser.error("--rejudge takes one results folder")
        return _rejudge(args.results[0])
    if len(args.results) > 2:
        parser.error("give one results folder, or two to compare")
    try:
        tables = [verdict_rows(d) for d in args.results]
    except (SchemaError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    ids = sorted(set().union(*tables), key=lambda i: (min(t[i][0] for t in tables if i in t), i))
    width = max([len(i) for i in ids] + [8])
    if len(tables) == 1:
        print(f"{'claim':<{width}}  {'data':<6}  verdict")
        for i in ids:
            run, ds, v = tables[0][i]
            print(f"{i:<{width}}  {ds:<6}  {v}")
        return 0
    print(f"{'claim':<{width}}  {'data':<6}  {'before':<15}  {'after':<15}")
    n_changed = 0
    for i in ids:
        before = tables[0].get(i, ("", "", "(absent)"))
        after = tables[1].get(i, ("", "", "(absent)"))
        ds = (after if i in tables[1] else before)[1]
        mark = "  *" if before[2] != after[2] else ""
        n_changed += bool(mark)
        print(f"{i:<{width}}  {ds:<6}  {before[2]:<15}  {after[2]:<15}{mark}")
    print(f"{len(ids)} claims, {n_changed} changed (*)")
    return 0


def _rejudge(directory) -> int:
    from .rejudge import rejudge

    try:
        stored = verdict_rows(directory)
        new = rejudge(directory)
    except (SchemaError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    n = n_changed = 0
    for run, claims in new.items():
        for c in claims:
            before = stored.get(c.id, ("", "", "(absent)"))[2]
            mark = "*" if before != c.verdict else " "
            n += 1
            n_changed += mark == "*"
            print(f"{mark} {c.id:<46} {before:<15} -> {c.verdict:<15} {c.reason}")
    gone = sorted(set(stored) - {c.id for cl in new.values() for c in cl})
    for i in gone:
        print(f"* {i:<46} {stored[i][2]:<15} -> (no longer a claim)")
    print(f"{n} claims decided again, {n_changed} changed (*); {len(gone)} stored claims are no "
          "longer made")
    return 0


if __name__ == "__main__":
    sys.exit(main())
