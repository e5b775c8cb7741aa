"""Publish an ablation's report: copy ``report.md``, ``report.json`` and the plots into the docs folder, and
put the report's per-method table and its reading into a docs page between two markers, word for word, so the
page can claim nothing the report's intervals do not.

    python -m pipelines.ablation.publish runs/ablation/ablation docs/ablation docs/sweeps-and-ablation.md
    python -m pipelines.ablation.publish runs/ablation-methods/ablation docs/ablation/methods -   # no quoted block

A run without K curves has no ``k_sensitivity.png``: only the files the run wrote are copied (the report
and its table are always there).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

START = "<!-- ablation:start (generated from docs/ablation/report.md by `make ablation-docs`; do not edit) -->"
END = "<!-- ablation:end -->"
FILES = ("report.md", "report.json", "methods.png", "search.png", "k_sensitivity.png", "spectra.png")


def section(markdown: str, title: str) -> list[str]:
    """The lines of a ``## `` section whose heading starts with ``title`` (without the heading and the blank
    lines around it)."""
    lines, out, inside = markdown.splitlines(), [], False
    for line in lines:
        if line.startswith("## "):
            inside = line[3:].startswith(title)
            continue
        if inside:
            out.append(line)
    while out and not out[0].strip():
        out.pop(0)
    while out and not out[-1].strip():
        out.pop()
    return out


def quoted_block(report_md: str) -> str:
    """What the page holds between the markers: the report's per-method table, its paper table and its
    reading, unchanged."""
    table = [x for x in section(report_md, "Per method") if x.startswith("|")]
    paper = [x for x in section(report_md, "Beside the paper") if x.startswith("|")]
    return "\n".join([START, "", *table, "", *paper, "", *section(report_md, "Reading"), "", END])


def splice(page: str, block: str) -> str:
    if START not in page or END not in page:
        raise ValueError(f"the page has no '{START}' ... '{END}' markers")
    head, rest = page.split(START, 1)
    return head + block + rest.split(END, 1)[1]


def publish(report_dir: Path, docs: Path, page: Path | None) -> None:
    docs.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        if name in ("report.md", "report.json") or (report_dir / name).exists():
            shutil.copyfile(report_dir / name, docs / name)
    if page is not None:
        page.write_text(splice(page.read_text(), quoted_block((docs / "report.md").read_text())))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: python -m pipelines.ablation.publish REPORT_DIR DOCS_DIR PAGE (or -)")
    publish(Path(sys.argv[1]), Path(sys.argv[2]), None if sys.argv[3] == "-" else Path(sys.argv[3]))
