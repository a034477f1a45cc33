"""mkdocs hooks: the ``hyper.yml`` reference table is made from the package's key list when the
site is built, so the page cannot drift from the schema (``tests/test_docs.py`` checks the list
against the schema)."""

from __future__ import annotations

from typing import Any

MARKER = "<!-- hyper-yml-keys -->"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if MARKER not in markdown:
        return markdown
    from aimlutils.hyper_opt.config.reference import markdown_table

    return markdown.replace(MARKER, markdown_table())
