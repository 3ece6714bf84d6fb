"""Bundle the results of the executed runs for download, before the pages are read.

The summary page links ``results/ctdnn-results.zip`` with a ``{download}`` role. The summary
notebook writes that archive from the results files it can see; the figures of the other
runs reach ``book/generated/results/`` only when those runs are published, so the archive is
refreshed here, at the start of every build, from everything the folder then holds (results
files, the claims CSV, the figures). Without a results folder nothing happens, and a
summary page that links the archive fails the build, as it should.
"""

from pathlib import Path

from ctdnn.book import write_bundle


def _bundle(app):
    results = Path(app.srcdir) / "book" / "generated" / "results"
    if results.is_dir():
        write_bundle(results)


def setup(app):
    app.connect("builder-inited", _bundle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
