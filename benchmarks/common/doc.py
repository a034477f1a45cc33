"""Each benchmark owns one section of docs/benchmarks.md, between HTML comment markers."""

from __future__ import annotations

from pathlib import Path

HEADER = (
    "# Benchmarks\n\nEach section is written by the command it names; run it again, from the repository "
    "root, to refresh it.\n"
)


def write_section(path: Path, name: str, text: str) -> None:
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    block = f"{begin}\n{text.strip()}\n{end}"
    current = path.read_text() if path.exists() else HEADER
    if begin in current and end in current:
        head, rest = current.split(begin, 1)
        current = head + block + rest.split(end, 1)[1]
    else:
        current = current.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(current)
