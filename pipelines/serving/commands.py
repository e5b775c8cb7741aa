"""``fora serve-manifest``: print (or write) the InferenceService of a version, and optionally apply it."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from ..config.run_config import RunConfig
from .deploy import apply_inference_service
from .handoff import manifest_for


def serve_manifest_command(run: RunConfig, ref: str, output: str | None = None, upload_base: bool = False,
                           apply: bool = False) -> int:
    """``fora serve-manifest``: the YAML on stdout (or in ``output``), the notes on stderr, optionally applied."""
    manifest, notes = manifest_for(run, ref, upload_base=upload_base)
    for note in notes:
        print(f"fora: {note}", file=sys.stderr)
    text = yaml.safe_dump(manifest, sort_keys=False)
    if output:
        Path(output).write_text(text)
        print(f"fora: wrote {output} (kubectl apply -f {output})", file=sys.stderr)
    else:
        print(text, end="")
    if apply:
        print(f"fora: InferenceService {manifest['metadata']['name']} {apply_inference_service(manifest)}",
              file=sys.stderr)
    return 0
