"""The kinds of user error, and how they end: in one line, never a traceback. The CLI and every KFP
component wrap their work in :func:`one_line_user_errors`.

* a user error (bad config value, malformed data row, unknown model, unreachable or refusing service):
  ``fora: error: <message>`` on stderr, exit code 2;
* a job that failed elsewhere (a Ray job on the cluster): one line naming the job and its own error, exit
  code 1 (its full log was already streamed above it), so KFP retries the step.

The error classes live here, at the bottom of ``pipelines``, so that every package can raise them and this
module needs none of the packages that raise them.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from fora_core import ForaConfigError, ModelLoadError


class RunConfigError(ForaConfigError):
    """A run configuration is invalid; the message names the field."""


class DataError(ValueError):
    """A data source or record is unusable; the message names the file, row and field."""


class TrainingDiverged(ValueError):
    """Training met a non-finite loss, gradient or parameter and stopped; nothing of it was saved as a model."""


class FailedElsewhere(RuntimeError):
    """A job that ran on another machine failed there (its log was already shown); KFP may retry the step."""


# Not FileNotFoundError: a path the user names is checked where it is named (load_run_config, the steps'
# require_inputs, data.sources.source_kind), so a missing file after that is a fault, shown as one.
USER_ERRORS: tuple[type[BaseException], ...] = (ForaConfigError, ModelLoadError, DataError, TrainingDiverged)
FAILED_ELSEWHERE: tuple[type[BaseException], ...] = (FailedElsewhere,)


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
