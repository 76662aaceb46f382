"""The kernel report texts in tests/data/kernel-reports/: header fields and console text."""

from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data" / "kernel-reports"
REPORTS = sorted(DATA.glob("*.txt"))


def load(path: Path) -> tuple[dict[str, str], str]:
    """A report file's header fields (kind, headline, fatal, ...) and its console text."""
    header: dict[str, str] = {}
    lines = path.read_text().splitlines(keepends=True)
    body = 0
    while body < len(lines) and lines[body].startswith("#"):
        field = lines[body][1:].removeprefix(" ")
        name, sep, value = field.partition(":")
        if sep and not field.startswith(" "):  # not a continuation line
            # A field given on several lines (later:) keeps one value a line.
            header[name] = "\n".join(filter(None, (header.get(name), value.strip())))
        body += 1
    return header, "".join(lines[body:])


def console_text(name: str) -> str:
    """The console text of the report file ``name`` (without .txt)."""
    return load(DATA / f"{name}.txt")[1]
