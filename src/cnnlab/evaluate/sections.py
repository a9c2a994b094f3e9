"""Sections that later commands add to a report: robustness, explanations, fairness.

The commands that compute them live on higher floors (``cnnlab.robustness``, ``cnnlab.explain``,
``cnnlab.fairness``) than the report, so the report never imports them. Each writes a
:class:`Section` into the report's directory with :func:`write_section`; that stores it as
``sections/<key>.json`` and renders ``report.md`` and ``report.html`` again from
``metrics.json`` and every stored section, so the page shows it at once. :func:`build_report`
reads the same files, so a report built later keeps every section::

    from cnnlab.evaluate.sections import Section, write_section

    write_section(run_dir, Section(
        key="robustness", title="Robustness",
        markdown="Mean corruption accuracy 97.1 % ...", html="<p>Mean corruption ...</p>",
        card=[("Mean corruption accuracy", "97.1 %")],
        figures={"corruptions": "plots/robustness_corruptions.png"}))

The ``html`` fragment is inserted as it is: escape any text that came from a user
(:func:`html.escape`). Figures are paths relative to the report directory; the HTML page
embeds them, the Markdown links them.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["SECTION_ORDER", "Section", "read_sections", "render_report", "write_section"]

#: where known sections go in the report, after the built-in ones; others follow by key
SECTION_ORDER = ("robustness", "explanations", "fairness")
SECTIONS_DIR = "sections"
_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,40}$")


@dataclass(frozen=True)
class Section:
    """One report section.

    Attributes:
        key: a short identifier (``robustness``), also the file name under ``sections/``.
        title: the heading in the report and the model card.
        markdown: the body in Markdown (without the heading).
        html: the body as an HTML fragment (trusted: escape user text before).
        card: rows for the model card, shown under ``title``; empty for none.
        figures: name -> PNG path relative to the report directory, shown after the body.
    """

    key: str
    title: str
    markdown: str
    html: str
    card: list[tuple[str, str]] = field(default_factory=list)
    figures: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _KEY.match(self.key):
            raise ValueError(f"a section key is lower-case letters, digits, - and _; "
                             f"got {self.key!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["card"] = [list(row) for row in self.card]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Section:
        return cls(str(d["key"]), str(d["title"]), str(d["markdown"]), str(d["html"]),
                   [(str(a), str(b)) for a, b in d.get("card", [])],
                   {str(k): str(v) for k, v in d.get("figures", {}).items()})


def _rank(key: str) -> tuple[int, str]:
    return (SECTION_ORDER.index(key) if key in SECTION_ORDER else len(SECTION_ORDER), key)


def read_sections(report_dir: str | Path) -> list[Section]:
    """The sections stored in ``report_dir/sections/``, in report order; unreadable files are
    skipped (a report never fails because of one)."""
    folder = Path(report_dir) / SECTIONS_DIR
    found: list[Section] = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            found.append(Section.from_dict(json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return sorted(found, key=lambda s: _rank(s.key))


def write_section(report_dir: str | Path, section: Section) -> Path | None:
    """Store ``section`` in ``report_dir`` and re-render the report there if one exists.

    Returns:
        The path of ``report.html`` when the report was re-rendered; ``None`` when the directory
        has no evaluation yet (the section then appears when ``cnnlab report`` builds one).
    """
    from cnnlab._io import atomic_write_text, clean_json

    out = Path(report_dir)
    atomic_write_text(out / SECTIONS_DIR / f"{section.key}.json",
                      json.dumps(clean_json(section.to_dict()), indent=2) + "\n")
    return render_report(out)


def render_report(report_dir: str | Path) -> Path | None:
    """Write ``report.md`` and ``report.html`` again from ``metrics.json``'s evaluation and the
    stored sections, without evaluating anything. ``None`` when there is no evaluation."""
    from cnnlab._io import atomic_write_text
    from cnnlab.evaluate.documents import html_page, markdown

    out = Path(report_dir)
    try:
        ev = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["evaluation"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    files = {key: out / rel for key, rel in ev.get("plots", {}).items() if (out / rel).is_file()}
    sections = read_sections(out)
    atomic_write_text(out / "report.md", markdown(ev, sections))
    return atomic_write_text(out / "report.html", html_page(ev, files, sections, base=out))
