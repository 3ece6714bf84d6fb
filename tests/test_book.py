"""The rendered book, opened in a real headless browser.

The book must have been built before (``./run.sh test`` builds it from the smoke preset);
``CTDNN_BOOK_DIR`` names its HTML folder (``.../_build/html``). The tests serve that folder
over HTTP on 127.0.0.1, open every page of ``_toc.yml`` in Debian's chromium through
Playwright, and check what a reader would see on every page: it loads with a title of its own
(no two pages share one), the provenance banner where results are shown, no traceback, no
error, warning or other stderr output, no absolute path of a machine, no raw LaTeX outside
rendered math, every image loads and internal links lead to built files. The reproduction
summary opens with its counts and holds one row per claim; the introduction shows the results
at a glance. A full-page screenshot of each page goes to
``test-artifacts/screenshots/<page>.png``.

Skipped, with the reason, when ``CTDNN_BOOK_DIR`` is unset or holds no built book, when
``/usr/bin/chromium`` is absent, or when Playwright is not installed.
"""

from __future__ import annotations

import functools
import html.parser
import http.server
import os
import re
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
VERDICTS = {"reproduced", "partly", "not reproduced", "inconclusive"}
#: Pages that show results and must open with the provenance banner (preset, data sources).
NO_BANNER = {"book/generated/07_reproducibility"}
# Folders that begin the absolute paths of a machine (home folders, temporary files, caches).
ABSOLUTE_PATH = re.compile(
    r"(?<![\w.:/~-])(?:/(?:home|root|tmp|work|usr|var|opt|mnt|srv|private|Users|proc|etc)/"
    r"[^\s'\"<>]*|[A-Za-z]:\\[^\s'\"<>]+)")
# TeX that reached the reader as text: display or inline delimiters, or dollar math with
# TeX syntax inside (a price never holds a backslash, a caret or an underscore).
RAW_TEX = re.compile(r"\$\$|\\\(|\\\)|\\\[|\\\]|\\begin\{|\$[^$\n]*[\\^_{}][^$\n]*\$")
WARNING_TEXT = re.compile(r"\b\w*Warning\b:")


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
RESULT_PAGES = [d for d in PAGES if d.startswith("book/generated/") and d not in NO_BANNER]


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


# The visible text of the page, without its math (Sphinx's .math elements hold the TeX that
# MathJax typesets; the test blocks every address but the book's, so MathJax does not run),
# its code (which may show "$" legitimately) and the hidden parts of the theme.
_TEXT_OUTSIDE_MATH = """
() => {
    const main = document.querySelector("main") || document.body;
    const copy = main.cloneNode(true);
    copy.querySelectorAll(".math, mjx-container, script, style, pre, code, .highlight")
        .forEach(node => node.remove());
    return copy.textContent;
}
"""


# All text of the page's content, folded code and outputs included.
_ALL_TEXT = "() => (document.querySelector('main') || document.body).textContent"


class _Title(html.parser.HTMLParser):
    """The <title> of an HTML file."""

    def __init__(self):
        super().__init__()
        self.inside, self.title = False, ""

    def handle_starttag(self, tag, attrs):
        self.inside = tag == "title"

    def handle_endtag(self, tag):
        self.inside = False

    def handle_data(self, data):
        if self.inside:
            self.title += data


def test_every_page_has_a_title_of_its_own(book_dir):
    """The browser tab, the sidebar and previous/next show the title: no two pages share one."""
    titles = {}
    for doc in PAGES:
        parser = _Title()
        parser.feed((book_dir / f"{doc}.html").read_text(encoding="utf-8"))
        titles.setdefault(" ".join(parser.title.split()), []).append(doc)
    shared = {t: docs for t, docs in titles.items() if len(docs) > 1}
    assert not shared, f"pages sharing a title: {shared}"
    assert "" not in titles, f"pages without a title: {titles.get('')}"


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
    if not page.title().strip():
        problems.append("no <title>")
    if doc in RESULT_PAGES and page.locator(".ctdnn-banner").count() != 1:
        problems.append(f"{page.locator('.ctdnn-banner').count()} provenance banners "
                        "(.ctdnn-banner) instead of one")
    if TRACEBACK in page.inner_text("body"):
        problems.append("the page shows a Python traceback")
    failed_cells = page.locator(".output.traceback, .output.error")
    if failed_cells.count():
        problems.append(f"{failed_cells.count()} error output(s), the first: "
                        f"{failed_cells.first.inner_text()[:300]!r}")
    stderr = page.locator(".output.stderr").all_inner_texts()
    if stderr:
        problems.append(f"{len(stderr)} stderr output block(s), the first: {stderr[0][:300]!r}")
    for output in page.locator(".cell_output").all_inner_texts():
        found = WARNING_TEXT.search(output)
        if found:
            problems.append("a warning in a cell's output: "
                            f"{output[max(0, found.start() - 100):found.end() + 100]!r}")
            break
    paths = sorted(set(ABSOLUTE_PATH.findall(page.evaluate(_ALL_TEXT))))
    if paths:
        problems.append(f"absolute paths of a machine on the page: {paths[:5]}")
    text = page.evaluate(_TEXT_OUTSIDE_MATH)
    tex = sorted({m.group(0)[:60] for m in RAW_TEX.finditer(text)})
    if tex:
        problems.append(f"raw LaTeX outside rendered math: {tex[:5]}")
    broken_images = [img["src"] for img in images if not img["loaded"]]
    if broken_images:
        problems.append(f"images that did not load: {broken_images}")
    broken_links = _broken_links(page, server, book_dir)
    if broken_links:
        problems.append(f"links to files that were not built: {broken_links}")
    assert not problems, f"{doc}.html:\n  " + "\n  ".join(problems)


def test_navigation_lists_every_page(page, server):
    _open(page, server, PAGES[0])
    links = page.eval_on_selector_all(
        "nav.bd-links a[href]", "links => links.map(a => [a.href, a.textContent.trim()])")
    linked = {unquote(urlsplit(h).path).lstrip("/") for h, _ in links}
    missing = [doc for doc in PAGES[1:] if f"{doc}.html" not in linked]
    assert not missing, f"pages missing from the navigation: {missing}"
    names = [name for _, name in links]
    repeated = sorted({n for n in names if names.count(n) > 1})
    assert not repeated, f"sidebar entries that read the same: {repeated}"


def test_introduction_shows_the_build_at_a_glance(page, server):
    """The preset, the data sources and every verdict, on the first page a reader sees."""
    _open(page, server, PAGES[0])
    assert page.locator(".ctdnn-banner").count() == 1, "no provenance banner on the introduction"
    banner = page.locator(".ctdnn-banner").inner_text()
    assert "Preset" in banner and ("sha256" in banner or "simulated" in banner), banner
    glance = page.locator(".ctdnn-glance")
    assert glance.count() == 1, "no verdict table (.ctdnn-glance) on the introduction"
    verdicts = {v.strip() for v in glance.locator(".ctdnn-verdict").all_inner_texts()}
    assert verdicts and verdicts <= VERDICTS, verdicts


def test_summary_has_the_reproduction_table(page, server, book_dir):
    if not (book_dir / f"{SUMMARY_PAGE}.html").is_file():
        pytest.fail(f"{SUMMARY_PAGE}.html was not built")
    _open(page, server, SUMMARY_PAGE)
    table = page.locator("#reproduction-summary")
    assert table.count() == 1, "the summary page has no table #reproduction-summary"
    rows = table.locator("tbody tr")
    assert rows.count() >= 1, "the reproduction summary table has no rows"
    header = [h.strip().lower() for h in table.locator("thead th").all_inner_texts()]
    assert header == ["claim", "paper", "verdict", "ours", "rule"], header
    # The counts come first: above the table in the page.
    counts = page.locator(".ctdnn-counts")
    assert counts.count() == 1, "the summary has no verdict counts (.ctdnn-counts)"
    above = page.evaluate("""() => {
        const c = document.querySelector('.ctdnn-counts');
        const t = document.querySelector('#reproduction-summary');
        return !!(c.compareDocumentPosition(t) & Node.DOCUMENT_POSITION_FOLLOWING); }""")
    assert above, "the verdict counts must come before the table"
    # One badge per data set in each row's verdict cell, and only the four verdicts.
    claims = [t.strip() for t in rows.locator("td:nth-child(1) code").all_inner_texts()]
    assert len(claims) == len(set(claims)), f"a claim has more than one row: {claims}"
    for i in range(rows.count()):
        badges = rows.nth(i).locator("td:nth-child(3) .ctdnn-verdict").all_inner_texts()
        assert badges and {b.strip() for b in badges} <= VERDICTS, (claims[i], badges)
        assert rows.nth(i).locator("td:nth-child(2)").inner_text().strip(), \
            f"{claims[i]}: no paper's number (or 'not given')"
    # The rule links lead to footnotes on the page, each rule stated once.
    targets = {h.split("#", 1)[1] for h in rows.locator("td:nth-child(5) a").evaluate_all(
        "links => links.map(a => a.getAttribute('href'))")}
    assert targets, "no rule links"
    for target in targets:
        assert page.locator(f"[id='{target}']").count() == 1, f"rule footnote {target} missing"
    # The results can be downloaded: the archive, the CSV, and what the links point to exists.
    downloads = page.eval_on_selector_all(
        "a.download, a[download], a[href*='_downloads/']",
        "links => links.map(a => a.getAttribute('href'))")
    names = {Path(unquote(urlsplit(h).path)).name for h in downloads}
    assert {"ctdnn-results.zip", "claims.csv"} <= names, f"downloads offered: {sorted(names)}"
    page_dir = (book_dir / SUMMARY_PAGE).parent
    for href in downloads:
        assert (page_dir / unquote(urlsplit(href).path)).resolve().is_file(), href


@pytest.mark.parametrize("doc", [d for d in PAGES if d.startswith("book/generated/")])
def test_binder_links_open_a_source_notebook(page, server, doc):
    """Executed copies are not in the repository: Binder must open notebooks/<stem>.ipynb."""
    page.goto(f"{server}{doc}.html", wait_until="domcontentloaded")
    hrefs = page.eval_on_selector_all("a[href*='mybinder.org']", "links => links.map(a => a.href)")
    assert hrefs, f"{doc}: no Binder launch button"
    for href in hrefs:
        path = unquote(href).split("urlpath=")[-1].split("/", 2)[-1]  # after "lab/tree/"
        assert path.startswith("notebooks/") and (ROOT / path).is_file(), href
