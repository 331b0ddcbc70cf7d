"""The built book, opened page by page in headless Chromium with no network.

Run by ``make browser`` (a stage of ``make test``, after the strict build)::

    python tests/book_browser.py _build/html

For every page of ``_toc.yml`` it checks what a reader would see: the page
loads with no error in the browser console (a script that throws, a file
that does not load, anything fetched from outside the book); every formula
is typeset by the book's own MathJax, without a TeX error, and no raw TeX
is left in the text; every image loads; every internal link points to a
page, and every ``#anchor`` to an element, that exist. Then the search page
must find a known term, the glossary's Chinese must be drawn with a font
that has those characters (not the fallback box), and three representative
pages are saved as screenshots under ``_build/screenshots/``.

The book is served from a local HTTP server on 127.0.0.1 (what a reader's
``python -m http.server`` would do); Chromium's host resolver is told that
every other host does not exist, so a page that needs the network fails.
Chromium and its driver come from Debian (``apt-get install chromium
chromium-driver``), driven through Selenium; nothing is downloaded.

The checks are functions, each returning a list of one-line problems, so
that ``tests/test_book_browser.py`` can show that each one fails on a page
broken on purpose.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVER = ("chromedriver",)
SCREENSHOTS = {
    "intro": "book/intro.html",
    "entropy": "book/02_entropy/entropy.html",
    "glossary": "book/appendix/glossary.html",
}
SEARCH_TERM = ("Huffman", "book/02_entropy/huffman.html")
GLOSSARY = "book/appendix/glossary.html"
# TeX that MathJax should have replaced; seen in a page's text (outside code
# and outputs) it means a formula was not typeset. A lone "$" is a dollar
# pair the Markdown parser did not match (the book writes no currency).
RAW_TEX = ("$", "\\(", "\\)", "\\[", "\\]", "\\frac", "\\sum", "\\begin{")


def _which(names) -> str | None:
    return next((p for p in map(shutil.which, names) if p), None)


def browser_available() -> bool:
    """Whether Chromium, its driver and Selenium are installed."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return False
    return _which(CHROMIUM) is not None and _which(DRIVER) is not None


# --------------------------------------------------------------------------
# Serving and driving
# --------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # one line per request: too many
        pass

    def end_headers(self) -> None:  # a page rewritten between loads is reloaded
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        # the browser drops a connection when it leaves a page mid-download
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextlib.contextmanager
def serve(root: str | os.PathLike):
    """Serve the folder ``root`` on 127.0.0.1 (a free port); yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def browser(width: int = 1280, height: int = 1400):
    """Headless Chromium with no network but 127.0.0.1, and its console log."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = _which(CHROMIUM), _which(DRIVER)
    if binary is None or driver is None:
        raise RuntimeError(
            "Chromium and its driver are not installed: "
            "sudo apt-get install -y chromium chromium-driver"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (
        "--headless=new",
        "--no-sandbox",  # as root in a container
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
        # no network: every host but the local server resolves to nothing
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        # ... and an address given as digits goes to a proxy that is not there
        "--proxy-server=127.0.0.1:9",
        "--proxy-bypass-list=127.0.0.1",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(driver), options=options)
    drv.set_script_timeout(60)
    drv.set_page_load_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()


# Waits until the page is as a reader sees it: MathJax has typeset every
# formula (its startup promise), every image has loaded or failed (images
# set to load eagerly, so that none waits to be scrolled to), and then every
# web font (MathJax's included) has loaded or failed. Returns "ok", or what
# went wrong with MathJax.
_TYPESET = """
const done = arguments[arguments.length - 1];
const images = Array.from(document.images);
images.forEach(i => { i.loading = "eager"; });
const loaded = Promise.all(images.map(i => i.decode().catch(() => null)));
const math = (window.MathJax && MathJax.startup && MathJax.startup.promise)
  ? MathJax.startup.promise.then(() => "ok", e => "MathJax failed: " + e)
  : Promise.resolve(window.MathJax ? "MathJax did not start" : "no MathJax");
Promise.all([math, loaded])
  .then(([m]) => document.fonts.ready.then(() => done(m)));
"""

# What is wrong on the page, once _TYPESET is done: formulas (elements of
# class "math", where MyST puts them) without MathJax's output or with a TeX
# error in it, text outside code and outputs that still holds TeX, and
# images that did not load.
_INSPECT = """
const skip = "pre, code, .highlight, .cell_output, .output, script, style, "
           + "mjx-container";
const raw = [];
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
for (let n = walker.nextNode(); n; n = walker.nextNode()) {
  const p = n.parentElement;
  if (p && !p.closest(skip) && arguments[0].some(t => n.data.includes(t))) {
    raw.push(n.data.trim().slice(0, 60));
  }
}
const formulas = Array.from(document.querySelectorAll(".math"));
return {
  formulas: formulas.length,
  untypeset: formulas.filter(f => !f.querySelector("mjx-container"))
                    .map(f => f.textContent.trim().slice(0, 60)),
  errors: Array.from(document.querySelectorAll("mjx-merror"))
               .map(e => (e.getAttribute("data-mjx-error") || e.textContent)
                         .slice(0, 80)),
  raw: raw,
  images: Array.from(document.images)
               .filter(i => !(i.complete && i.naturalWidth > 0))
               .map(i => i.getAttribute("src")),
};
"""


def _console(driver, url: str) -> list[str]:
    """The browser console's errors since the last call (``url``: the page)."""
    # the browser asks every site for /favicon.ico by itself; not the page's fault
    favicon = urljoin(url, "/favicon.ico") + " "
    return [
        f"console: {e['message'][:160]}"
        for e in driver.get_log("browser")
        if e["level"] == "SEVERE" and not e["message"].startswith(favicon)
    ]


def check_page(driver, url: str) -> list[str]:
    """Problems a reader would see on the page at ``url`` (empty: none)."""
    from selenium.common.exceptions import WebDriverException

    # an error the previous page logged after it was checked (a late font)
    problems = [f"after the previous page: {m}" for m in _console(driver, url)]
    try:
        driver.get(url)
        state = driver.execute_async_script(_TYPESET)
        seen = driver.execute_script(_INSPECT, list(RAW_TEX))
    except WebDriverException as err:  # a timeout, a crashed tab
        return problems + [f"did not load: {err.msg or type(err).__name__}"]
    if seen["formulas"] and state != "ok":
        problems.append(f"{seen['formulas']} formulas but {state}")
    problems += [f"formula not typeset: {t!r}" for t in seen["untypeset"]]
    problems += [f"TeX error: {t!r}" for t in seen["errors"]]
    problems += [f"raw TeX in the text: {t!r}" for t in seen["raw"]]
    problems += [f"image does not load: {s}" for s in seen["images"]]
    return problems + _console(driver, url)


def check_search(driver, base: str, term: str, expect: str) -> list[str]:
    """The book's search page must list ``expect`` among the results for ``term``."""
    url = urljoin(base, f"search.html?q={term}")
    _console(driver, url)  # earlier pages' errors were reported with them
    driver.get(url)
    deadline = time.monotonic() + 30
    links: list[str] = []
    while time.monotonic() < deadline:
        links = driver.execute_script(
            "return Array.from(document.querySelectorAll('#search-results a'))"
            ".map(a => a.getAttribute('href'));"
        )
        if any(expect in (h or "") for h in links):
            return [f"search page: {m}" for m in _console(driver, url)]
        time.sleep(0.25)
    return [f"search for {term!r} does not list {expect} (found {len(links)} links)"]


def fonts_with(chars: str) -> set[str]:
    """Font families installed here (fontconfig) that have a glyph for every
    character of ``chars``."""
    fc = shutil.which("fc-list")
    if fc is None:
        raise RuntimeError("fc-list not found: sudo apt-get install -y fontconfig")
    out = subprocess.run(
        [fc, ":charset=" + " ".join(f"{ord(c):x}" for c in chars), "family"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return {name.strip() for line in out.splitlines() for name in line.split(",")}


def check_cjk(driver, url: str, selector: str = "dt") -> list[str]:
    """Every element ``selector`` with Chinese text must be drawn with a font that
    has its characters: the platform fonts Chromium used for it (DevTools'
    ``CSS.getPlatformFontsForNode``) must include one that fontconfig says
    covers them, or the reader sees boxes."""
    driver.get(url)
    texts = driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]))"
        ".map(e => e.textContent);",
        selector,
    )
    han = sorted({c for t in texts for c in t if "\u4e00" <= c <= "\u9fff"})
    if not han:
        return [f"no Chinese text in {selector} elements of {url}"]
    covering = fonts_with("".join(han))
    if not covering:
        return [
            f"no installed font has all {len(han)} Chinese characters of the page:"
            " sudo apt-get install -y fonts-noto-cjk"
        ]
    driver.execute_cdp_cmd("DOM.enable", {})
    driver.execute_cdp_cmd("CSS.enable", {})
    root = driver.execute_cdp_cmd("DOM.getDocument", {"depth": 0})["root"]["nodeId"]
    ids = driver.execute_cdp_cmd(
        "DOM.querySelectorAll", {"nodeId": root, "selector": selector}
    )["nodeIds"]
    problems = []
    for node, text in zip(ids, texts, strict=True):
        if not any("\u4e00" <= c <= "\u9fff" for c in text):
            continue
        used = driver.execute_cdp_cmd("CSS.getPlatformFontsForNode", {"nodeId": node})
        families = {f["familyName"] for f in used["fonts"]}
        if not families & covering:
            problems.append(
                f"Chinese in {text.strip()[:40]!r} drawn with {sorted(families)},"
                f" none of which has it"
            )
    return problems


# --------------------------------------------------------------------------
# Links, without a browser
# --------------------------------------------------------------------------


class _Anchors(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("name"):  # the old form of an anchor
            self.ids.add(attrs["name"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])


def _parse(path: Path) -> _Anchors:
    return _parse_version(path, path.stat().st_mtime_ns)


@functools.cache
def _parse_version(path: Path, mtime: int) -> _Anchors:  # a rewritten file: reread
    parser = _Anchors()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return parser


def check_links(root: str | os.PathLike, page: str) -> list[str]:
    """Every link of ``page`` (a path under ``root``) that stays in the book
    must reach a file that exists, and its ``#anchor`` an element of it."""
    root = Path(root).resolve()
    here = root / page
    problems = []
    for href in _parse(here).links:
        parts = urlsplit(href)
        if parts.scheme == "file":
            problems.append(f"link to a file of the machine that built it: {href}")
            continue
        if parts.scheme or parts.netloc:
            continue  # outside the book (http, mailto): not followed, no network
        target = here if not parts.path else (here.parent / unquote(parts.path))
        target = target.resolve()
        if target.is_dir():
            target = target / "index.html"
        if not target.is_relative_to(root) or not target.is_file():
            problems.append(f"link to a missing page: {href}")
        elif parts.fragment and target.suffix == ".html":
            if unquote(parts.fragment) not in _parse(target).ids:
                problems.append(f"link to a missing anchor: {href}")
    return problems


def toc_pages(toc: str | os.PathLike) -> list[str]:
    """The HTML path of every page ``_toc.yml`` lists, root first."""
    import yaml

    spec = yaml.safe_load(Path(toc).read_text(encoding="utf-8"))
    pages = [spec["root"]]

    def walk(items):
        for item in items or ():
            if "glob" in item or "url" in item:
                raise ValueError(f"{toc}: only 'file' entries are checked, got {item}")
            if "file" in item:
                pages.append(item["file"])
            walk(item.get("sections"))
            walk(item.get("chapters"))

    for part in spec.get("parts", ()):
        walk(part.get("chapters"))
    walk(spec.get("chapters"))
    return [p.removesuffix(".md").removesuffix(".ipynb") + ".html" for p in pages]


# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("html", nargs="?", default="_build/html")
    parser.add_argument("--toc", default="_toc.yml")
    parser.add_argument("--screenshots", default="_build/screenshots")
    args = parser.parse_args(argv)
    root = Path(args.html).resolve()
    if not (root / "index.html").is_file():
        print(f"no built book at {args.html}: run make book first", file=sys.stderr)
        return 2
    if not browser_available():
        print(
            "the browser test needs Chromium, its driver and Selenium: sudo apt-get"
            " install -y chromium chromium-driver; pip install selenium",
            file=sys.stderr,
        )
        return 2
    pages = toc_pages(args.toc)
    missing = [p for p in pages if not (root / p).is_file()]
    problems = [f"{p}: listed in {args.toc} but not built" for p in missing]
    pages = [p for p in pages if p not in missing]
    start = time.monotonic()
    try:
        with serve(root) as base, browser() as driver:
            for page in pages:
                problems += [f"{page}: {m}" for m in check_page(driver, base + page)]
                problems += [f"{page}: {m}" for m in check_links(root, page)]
            problems += check_search(driver, base, *SEARCH_TERM)
            problems += [f"{GLOSSARY}: {m}" for m in check_cjk(driver, base + GLOSSARY)]
            # the same pages opened from the disk, as README.md says one may
            for page in SCREENSHOTS.values():
                url = (root / page).as_uri()
                problems += [f"{url}: {m}" for m in check_page(driver, url)]
            shots = Path(args.screenshots)
            shots.mkdir(parents=True, exist_ok=True)
            for name, page in SCREENSHOTS.items():
                problems += [f"{page}: {m}" for m in check_page(driver, base + page)]
                driver.save_screenshot(str(shots / f"{name}.png"))
    except RuntimeError as err:  # a tool missing (fc-list), said in one line
        print(err, file=sys.stderr)
        return 2
    for p in problems:
        print(p)
    print(
        f"book_browser: {len(pages)} pages, {len(problems)} problems, "
        f"{time.monotonic() - start:.0f} s; screenshots in {args.screenshots}/"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
