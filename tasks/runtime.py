"""Prefect glue shared by the task wrappers: retry policy and run identity.

Only errors that can pass on their own (IO hiccups, a LanceDB commit conflict) are
retried; a bad manifest, a misconfigured encoder or a full disk fails at once, because
retrying it only delays the message the user needs.
"""

from __future__ import annotations

import errno
from typing import Any

PERMANENT = (ValueError, TypeError, KeyError, LookupError, FileNotFoundError,
             NotADirectoryError, PermissionError, ImportError, NotImplementedError)


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except PERMANENT:
        return False
    except OSError as error:
        # A full disk does not empty itself between retries (tasks.storage.DiskFullError).
        return error.errno not in (errno.ENOSPC, errno.EDQUOT)
    except Exception:
        return True
    return False


def current_run_id(default: str = "local") -> str:
    """The Prefect flow run id when inside a flow, so stores can be tagged with it."""
    from prefect.runtime import flow_run

    run_id = flow_run.get_id()
    return str(run_id) if run_id else default
