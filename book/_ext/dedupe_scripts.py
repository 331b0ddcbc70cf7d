"""A Sphinx extension of this book: each script tag once per page.

With jupyter-book 1.x, sphinx-thebe's and sphinx-togglebutton's inline
configuration scripts are added to every page twice; the second
``const THEBE_JS_URL = ...`` then throws "Identifier has already been
declared" in the browser console (``make browser`` reports it). This drops
exact repeats (same file or body, same attributes) from the page's scripts,
keeping the first of each, in order.
"""


def _dedupe(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for js in scripts:
        attrs = getattr(js, "attributes", {}) or {}
        # an inline script is named None or "" depending on when it was added
        name = getattr(js, "filename", None) or ""
        key = (name, tuple(sorted((k, str(v)) for k, v in attrs.items())))
        if key not in seen:
            seen.add(key)
            kept.append(js)
    # in place: handlers that run later (MathJax's) add to this same list
    scripts[:] = kept


def setup(app):
    # early, so that only the scripts added at set-up are compared, not
    # those other handlers add for one page
    app.connect("html-page-context", _dedupe, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
