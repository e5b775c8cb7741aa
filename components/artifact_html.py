"""Small helpers for KFP artifacts: visualisations the KFP UI can show."""

from __future__ import annotations

import base64
import html
from pathlib import Path


def png_to_html(png: str | Path, html_path: str | Path, title: str) -> Path:
    """Wrap a PNG in a self-contained HTML page (the KFP UI renders ``HTML`` artifacts inline)."""
    data = base64.b64encode(Path(png).read_bytes()).decode()
    Path(html_path).parent.mkdir(parents=True, exist_ok=True)
    Path(html_path).write_text(f"<html><head><title>{html.escape(title)}</title></head><body>"
                               f"<h3>{html.escape(title)}</h3><img src=\"data:image/png;base64,{data}\"/>"
                               "</body></html>")
    return Path(html_path)
