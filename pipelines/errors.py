"""User mistakes end in one line, never a traceback: the CLI and every KFP component use this."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from fora_core import ForaConfigError, ModelLoadError

from .steps.data_prep import DataError

USER_ERRORS: tuple[type[BaseException], ...] = (ForaConfigError, ModelLoadError, DataError, FileNotFoundError)


@contextlib.contextmanager
def one_line_user_errors(prog: str = "fora") -> Iterator[None]:
    """Turn a user error into ``prog: error: <message>`` on stderr and exit code 2."""
    try:
        yield
    except USER_ERRORS as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
