"""User mistakes end in one line, never a traceback: the CLI and every KFP component use this.

* a user error (bad config value, malformed data row, unknown model, unreachable or refusing service):
  ``fora: error: <message>`` on stderr, exit code 2;
* a Ray job that failed on the cluster: one line naming the job and its own error, exit code 1 (its full
  log was already streamed above it), so KFP retries the step.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from fora_core import ForaConfigError, ModelLoadError

from .ray_jobs import RayJobFailed
from .steps.data_prep import DataError

# Not FileNotFoundError: a path the user names is checked where it is named (load_run_config, the steps'
# require_inputs, data_prep.source_kind), so a missing file after that is a fault, shown as one.
USER_ERRORS: tuple[type[BaseException], ...] = (ForaConfigError, ModelLoadError, DataError)
FAILED_ELSEWHERE: tuple[type[BaseException], ...] = (RayJobFailed,)


@contextlib.contextmanager
def one_line_user_errors(prog: str = "fora") -> Iterator[None]:
    """Turn a user error into ``prog: error: <message>`` on stderr and exit code 2 (1 for a failed Ray job)."""
    try:
        yield
    except USER_ERRORS as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except FAILED_ELSEWHERE as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
