"""The rendered book, opened in a real headless browser.

The book must have been built before (``./run.sh test`` builds it from the smoke preset);
``CTDNN_BOOK_DIR`` names its HTML folder (``.../_build/html``). The tests serve that folder
over HTTP on 127.0.0.1, open every page of ``_toc.yml`` in Debian's chromium through
Playwright, and check what a reader would see: the page loads, no traceback or error output
is shown, every image loads, internal links lead to built pages, and the reproduction summary
holds its table. A full-page screenshot of each page goes to
``test-artifacts/screenshots/<page>.png``.

Skipped, with the reason, when ``CTDNN_BOOK_DIR`` is unset or holds no built book, when
``/usr/bin/chromium`` is absent, or when Playwright is not installed.
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import pytest
import yaml

pytestmark = pytest.mark.book

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SUMMARY_PAGE = "book/generated/06_summary"
TRACEBACK = "Traceback (most recent call last)"


def toc_pages(toc_file: Path = ROOT / "_toc.yml") -> list[str]:
    """Every document of the table of contents, root first, without suffix."""
    toc = yaml.safe_load(toc_file.read_text())
    pages = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                pages.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))

    walk(toc.get("chapters"))
    for part in toc.get("parts") or []:
        walk(part.get("chapters"))
    return [str(Path(p).with_suffix("")) if Path(p).suffix in (".md", ".ipynb") else p
            for p in pages]


PAGES = toc_pages()


@pytest.fixture(scope="module")
def book_dir() -> Path:
    value = os.environ.get("CTDNN_BOOK_DIR", "").strip()
    if not value:
        pytest.skip("CTDNN_BOOK_DIR is not set: build the book first (./run.sh test does, "
                    "from the smoke preset) and point CTDNN_BOOK_DIR at its _build/html")
    folder = Path(value).expanduser().resolve()
    if not (folder / "index.html").is_file():
        pytest.skip(f"CTDNN_BOOK_DIR={value} holds no built book (no index.html)")
    return folder


@pytest.fixture(scope="module")
def server(book_dir):
    """The book over HTTP on 127.0.0.1 (a free port), served from a thread."""

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(QuietHandler, directory=str(book_dir))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium "
                    "(apt-get install chromium) to run the browser test")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is not installed (pip install playwright)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    """A fresh tab that may only reach the local server: the book must work offline."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    local = urlsplit(server).netloc

    def only_local(route):
        if urlsplit(route.request.url).netloc == local or route.request.url.startswith("data:"):
            route.continue_()
        else:
            route.abort()

    context.route("**/*", only_local)
    tab = context.new_page()
    tab.set_default_timeout(30_000)
    yield tab
    context.close()


def _open(page, server, doc):
    response = page.goto(urljoin(server, f"{doc}.html"), wait_until="load")
    assert response is not None, f"{doc}.html: no response"
    assert response.status == 200, f"{doc}.html: HTTP {response.status}"
    return response


_WAIT_FOR_IMAGES = """
async () => {
    const images = Array.from(document.images);
    for (const img of images) { img.loading = "eager"; }
    await Promise.all(images.map(img => img.complete ? null : new Promise(done => {
        img.addEventListener("load", done);
        img.addEventListener("error", done);
        setTimeout(done, 15000);
    })));
    return images.map(img => ({src: img.currentSrc || img.src,
                               loaded: img.complete && img.naturalWidth > 0}));
}
"""


def test_every_toc_page_was_built(book_dir):
    missing = [doc for doc in PAGES if not (book_dir / f"{doc}.html").is_file()]
    assert not missing, f"pages of _toc.yml missing from the built book: {missing}"


def test_index_leads_to_the_introduction(page, server, book_dir):
    page.goto(server, wait_until="load")
    page.wait_for_url(f"**/{PAGES[0]}.html", timeout=10_000)
    assert page.locator("h1").first.inner_text().strip()


def _broken_links(page, server, book_dir) -> list[str]:
    """Links to this server whose target file was not built."""
    hrefs = page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)")
    local = urlsplit(server).netloc
    broken = set()
    for href in hrefs:
        parts = urlsplit(href)
        if parts.netloc != local or parts.scheme not in ("http", "https"):
            continue
        target = book_dir / unquote(parts.path).lstrip("/")
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            broken.add(parts.path)
    return sorted(broken)


@pytest.mark.parametrize("doc", PAGES)
def test_page_renders_cleanly(page, server, book_dir, doc):
    """One visit per page; every problem found is reported together, with a screenshot."""
    if not (book_dir / f"{doc}.html").is_file():
        pytest.fail(f"{doc}.html was not built")
    _open(page, server, doc)
    problems = []
    images = page.evaluate(_WAIT_FOR_IMAGES)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{Path(doc).name}.png"), full_page=True)

    if not page.locator("h1").first.inner_text().strip():
        problems.append("no page title (h1)")
    if TRACEBACK in page.inner_text("body"):
        problems.append("the page shows a Python traceback")
    failed_cells = page.locator(".output.traceback, .output.error")
    if failed_cells.count():
        problems.append(f"{failed_cells.count()} error output(s), the first: "
                        f"{failed_cells.first.inner_text()[:300]!r}")
    stderr = [s for s in page.locator(".output.stderr").all_inner_texts() if "Error" in s]
    if stderr:
        problems.append(f"an error on stderr: {stderr[0][:300]!r}")
    broken_images = [img["src"] for img in images if not img["loaded"]]
    if broken_images:
        problems.append(f"images that did not load: {broken_images}")
    broken_links = _broken_links(page, server, book_dir)
    if broken_links:
        problems.append(f"links to files that were not built: {broken_links}")
    assert not problems, f"{doc}.html:\n  " + "\n  ".join(problems)


def test_navigation_lists_every_page(page, server):
    _open(page, server, PAGES[0])
    hrefs = page.eval_on_selector_all("nav a[href]", "links => links.map(a => a.href)")
    linked = {unquote(urlsplit(h).path).lstrip("/") for h in hrefs}
    missing = [doc for doc in PAGES[1:] if f"{doc}.html" not in linked]
    assert not missing, f"pages missing from the navigation: {missing}"


def test_summary_has_the_reproduction_table(page, server, book_dir):
    if not (book_dir / f"{SUMMARY_PAGE}.html").is_file():
        pytest.fail(f"{SUMMARY_PAGE}.html was not built")
    _open(page, server, SUMMARY_PAGE)
    table = page.locator("#reproduction-summary")
    assert table.count() == 1, "the summary page has no table #reproduction-summary"
    rows = table.locator("tbody tr")
    assert rows.count() >= 1, "the reproduction summary table has no rows"
    header = [h.strip().lower() for h in table.locator("thead th").all_inner_texts()]
    for column in ("claim", "paper", "ours", "verdict", "rule"):
        assert column in header, f"column {column!r} missing from the summary table: {header}"
    verdicts = {v.strip() for v in rows.locator("td:nth-child(4)").all_inner_texts()}
    assert verdicts <= {"reproduced", "partly", "not reproduced"}, verdicts


@pytest.mark.parametrize("doc", [d for d in PAGES if d.startswith("book/generated/")])
def test_binder_links_open_a_source_notebook(page, server, doc):
    """Executed copies are not in the repository: Binder must open notebooks/<stem>.ipynb."""
    page.goto(f"{server}{doc}.html", wait_until="domcontentloaded")
    hrefs = page.eval_on_selector_all("a[href*='mybinder.org']", "links => links.map(a => a.href)")
    assert hrefs, f"{doc}: no Binder launch button"
    for href in hrefs:
        path = unquote(href).split("urlpath=")[-1].split("/", 2)[-1]  # after "lab/tree/"
        assert path.startswith("notebooks/") and (ROOT / path).is_file(), href
