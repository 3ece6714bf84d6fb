"""Point the launch buttons of executed pages at the source notebooks.

The book renders executed copies from ``book/generated/`` (not in the repository, one per
run: ``02_dto_surrogates_CDR`` is ``notebooks/02_dto_surrogates.ipynb`` run on CDR). Binder
opens files of the repository, so the launch links are rewritten to the source notebook.
"""

import re

_GENERATED = re.compile(r"book/generated/(?P<run>[0-9A-Za-z_]+?)(?:_(?:ELM|CDR|DCR))?\.ipynb")


def _fix_launch_links(app, pagename, templatename, context, doctree):
    # Only the launch group: the download button must keep pointing at the rendered copy.
    for group in context.get("header_buttons", []):
        if group.get("label") != "launch-buttons":
            continue
        for button in group.get("buttons", []):
            if isinstance(button.get("url"), str):
                button["url"] = _GENERATED.sub(lambda m: f"notebooks/{m.group('run')}.ipynb",
                                               button["url"])


def setup(app):
    # after sphinx-book-theme's add_launch_buttons (priority 501)
    app.connect("html-page-context", _fix_launch_links, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
