"""The book's browser test (tests/book_browser.py) catches what it claims to.

A small site is made in a temporary folder with the book's own offline
MathJax: one page as a reader should see it, and pages each broken in one
way (a formula with a TeX error, an undefined macro, TeX left raw, an image
that does not load, a script that throws, a file fetched from the network,
links to a missing page and to a missing anchor). The checker must pass the
first and name the fault of each of the others.
"""

import importlib.util
import struct
import zlib
from pathlib import Path

import book_browser as bb
import pytest

pytestmark = pytest.mark.skipif(
    not bb.browser_available(),
    reason="sudo apt-get install -y chromium chromium-driver; pip install selenium",
)


def _mathjax() -> Path:
    spec = importlib.util.find_spec("sphinx-mathjax-offline")
    if spec is None:
        pytest.skip("pip install sphinx-mathjax-offline")
    return Path(spec.origin).parent / "static" / "mathjax"


def _png(path: Path) -> None:
    """A valid 1 x 1 PNG, written by hand."""

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    raw = zlib.compress(b"\x00\xff\x00\x00")
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw)
        + chunk(b"IEND", b"")
    )  # fmt: skip


PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8">
<script>window.MathJax = {{tex: {{packages: {{"[-]": ["noundefined"]}}}}}};</script>
<script defer src="mathjax/tex-chtml.js"></script>{head}</head>
<body><h1 id="top">Page</h1>{body}</body></html>"""

GOOD = """
<p>Entropy <span class="math notranslate nohighlight">\\(H(p) = -\\sum_x p(x)
\\log_2 p(x)\\)</span> and a display:</p>
<div class="math notranslate nohighlight">\\[\\frac{a}{b}\\]</div>
<pre>code may hold \\( and $$ as it likes</pre>
<img src="dot.png" alt="a dot">
<a href="other.html#sec">a section</a> <a href="#top">top</a>
<a href="https://example.org/">outside (not followed)</a>
"""

BROKEN = {
    "tex-error": ('<span class="math">\\(\\frac{1}{2}}\\)</span>', "TeX error"),
    "unclosed": ('<span class="math">\\(\\frac{1}{\\)</span>', "formula not typeset"),
    "undefined-macro": ('<span class="math">\\(\\nosuchmacro x\\)</span>', "TeX error"),
    # dollar math that the Markdown parser did not turn into a formula
    "raw-tex": ("<p>The entropy $H = -\\sum p \\log p$ is left raw.</p>", "raw TeX"),
    "image": ('<img src="missing.png" alt="gone">', "image does not load"),
    "script": ("<script>no_such_function();</script>", "console"),
    "network": ('<script src="https://cdn.example.org/x.js"></script>', "console"),
}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    (root / "mathjax").symlink_to(_mathjax(), target_is_directory=True)
    _png(root / "dot.png")
    (root / "index.html").write_text(PAGE.format(head="", body=GOOD))
    (root / "other.html").write_text(
        PAGE.format(head="", body='<h2 id="sec">Section</h2>')
    )
    for name, (body, _) in BROKEN.items():
        (root / f"{name}.html").write_text(PAGE.format(head="", body=body))
    (root / "links.html").write_text(
        PAGE.format(
            head="",
            body='<a href="nowhere.html">x</a> <a href="other.html#nosuch">y</a>'
            ' <a href="#top">ok</a> <a href="#">ok</a> <a href="sub/">ok</a>'
            ' <a href="other.html?q=1#sec">ok</a> <a href="file:///etc/hosts">z</a>',
        )
    )
    (root / "sub").mkdir()
    (root / "sub" / "index.html").write_text(
        PAGE.format(
            head="",
            body='<a href="../other.html#sec">ok</a> <a href="index.html">ok</a>'
            ' <a href="../../outside.html">out</a>'
            ' <meta name="sec2"> <a name="old">an old anchor</a>'
            ' <a href="#old">ok</a> <a href="#sec2">no</a>',
        )
    )
    with bb.serve(root) as base, bb.browser() as driver:
        yield root, base, driver


def test_a_good_page_has_no_problems(site):
    root, base, driver = site
    assert bb.check_page(driver, base + "index.html") == []
    assert bb.check_links(root, "index.html") == []


@pytest.mark.parametrize("name", list(BROKEN))
def test_each_broken_page_is_caught(site, name):
    root, base, driver = site
    problems = bb.check_page(driver, base + f"{name}.html")
    expected = BROKEN[name][1]
    assert any(p.startswith(expected) for p in problems), problems


def test_broken_links_are_caught(site):
    root, _, _ = site
    problems = bb.check_links(root, "links.html")
    assert problems == [
        "link to a missing page: nowhere.html",
        "link to a missing anchor: other.html#nosuch",
        "link to a file of the machine that built it: file:///etc/hosts",
    ]
    assert bb.check_links(root, "sub/index.html") == [
        "link to a missing page: ../../outside.html",  # outside the book
        "link to a missing anchor: #sec2",  # a <meta name> is not an anchor
    ]


def test_toc_pages_lists_every_file_root_first(tmp_path):
    toc = tmp_path / "_toc.yml"
    toc.write_text(
        "format: jb-book\nroot: book/intro\nparts:\n"
        "  - caption: A\n    chapters:\n      - file: book/a/index\n"
        "        sections:\n          - file: book/a/one\n"
    )
    assert bb.toc_pages(toc) == [
        "book/intro.html",
        "book/a/index.html",
        "book/a/one.html",
    ]


def test_fonts_with_knows_which_fonts_cover_the_characters():
    latin = bb.fonts_with("a")
    assert latin  # some font has "a"
    assert not bb.fonts_with("\U0010fffd")  # private use: no font has it
    assert not bb.fonts_with("a\U0010fffd")  # every character must be covered


def test_a_page_that_does_not_load_is_one_problem_not_a_crash(site):
    _, base, driver = site
    driver.set_page_load_timeout(0.001)
    try:
        problems = bb.check_page(driver, base + "index.html")
    finally:
        driver.set_page_load_timeout(60)
    assert any(p.startswith("did not load") for p in problems), problems


def test_chinese_is_drawn_with_a_font_that_has_it(site, monkeypatch):
    root, base, driver = site
    (root / "cjk.html").write_text(
        PAGE.format(head="", body="<dl><dt>Entropy (熵)</dt><dt>Plain</dt></dl>")
    )
    if not bb.fonts_with("熵"):
        pytest.skip("no CJK font here: sudo apt-get install -y fonts-noto-cjk")
    assert bb.check_cjk(driver, base + "cjk.html") == []
    # as on a machine whose fonts do not cover it: the fallback box
    monkeypatch.setattr(bb, "fonts_with", lambda char: {"No Such Font"})
    (problem,) = bb.check_cjk(driver, base + "cjk.html")
    assert problem.startswith("Chinese in 'Entropy (熵)' drawn with")
