"""Which nbval-checked outputs depend on processor rounding?

Executes the notebooks (their default parameters, as nbval does) three times: as they are, with
``ATEN_CPU_CAPABILITY=default`` (torch's kernels without vector instructions) and with
``MKL_CBWR=COMPATIBLE`` (MKL's conditional numerical reproducibility), then compares the
sanitised outputs of the cells tagged ``nbval-check-output`` between the three runs and with the
outputs stored in the notebooks. A checked output that changes is no regression value: untag it or
print something coarser. Exit status 1 when any differs.

    .venv/bin/python tests/nbval_rounding.py [notebooks/02_dto_surrogates.ipynb ...]
    .venv/bin/python tests/nbval_rounding.py --store [notebooks/...]

``--store`` instead executes the notebooks once in CI's environment (both variables set, as in
``.ci/run``) and writes the outputs into the source notebooks: the outputs nbval compares with.

Set ``CTDNN_DATA_DIR`` (and ``CTDNN_OFFLINE=1``) as for the tests. Each execution runs in a
fresh kernel, so the variables take effect; the three environments run one after another.
"""

from __future__ import annotations

import configparser
import difflib
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TAG = "nbval-check-output"
ENVIRONMENTS = {
    "as is": {},
    "ATEN_CPU_CAPABILITY=default": {"ATEN_CPU_CAPABILITY": "default"},
    "MKL_CBWR=COMPATIBLE": {"MKL_CBWR": "COMPATIBLE"},
}


def _sanitizers():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "tests" / "nbval_sanitize.cfg")
    return [(re.compile(cfg[s]["regex"]), cfg[s]["replace"]) for s in cfg.sections()]


def checked_outputs(nb, subs) -> dict[int, str]:
    """``{cell index: sanitised text}`` of the cells tagged ``nbval-check-output``."""
    out = {}
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or TAG not in cell.metadata.get("tags", []):
            continue
        text = ""
        for o in cell.get("outputs", []):
            if o["output_type"] == "stream":
                text += o["text"]
            elif "data" in o:
                text += o["data"].get("text/plain", "")
        for rx, rep in subs:
            text = rx.sub(rep, text)
        out[i] = text
    return out


def execute(path: Path, env: dict):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, 4)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)   # inherited by the kernel started below
    try:
        NotebookClient(nb, timeout=1800, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


CI_ENVIRONMENT = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}


def main(argv=None) -> int:
    import nbformat

    args = list(sys.argv[1:] if argv is None else argv)
    store = "--store" in args
    paths = [Path(p) for p in args if p != "--store"] or sorted(
        p for p in (ROOT / "notebooks").glob("*.ipynb"))
    if store:
        for path in paths:
            nb = execute(path, CI_ENVIRONMENT)
            nbformat.write(nb, path)
            print(f"{path.name}: outputs stored", flush=True)
        return 0
    subs = _sanitizers()
    n_bad = 0
    for path in paths:
        stored = checked_outputs(nbformat.read(path, 4), subs)
        if not stored:
            print(f"{path.name}: no checked cells")
            continue
        runs = {name: checked_outputs(execute(path, env), subs) for name, env in ENVIRONMENTS.items()}
        runs = {"stored": stored, **runs}
        first = next(iter(runs))
        for i in stored:
            variants = {name: r.get(i, "") for name, r in runs.items()}
            if len(set(variants.values())) == 1:
                continue
            n_bad += 1
            print(f"{path.name}, cell {i}: the checked output differs")
            for name, text in variants.items():
                if name == first or text == variants[first]:
                    continue
                diff = difflib.unified_diff(variants[first].splitlines(), text.splitlines(),
                                            f"{first}", name, lineterm="", n=0)
                print("\n".join(f"    {line}" for line in diff))
        print(f"{path.name}: {len(stored)} checked cell(s) compared across "
              f"{', '.join(runs)}", flush=True)
    print(f"{n_bad} checked output(s) depend on rounding")
    return 1 if n_bad else 0


if __name__ == "__main__":
    sys.exit(main())
