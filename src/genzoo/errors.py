"""Exceptions for problems a user can fix (bad flag, missing file, corrupt data, divergence).

The CLI prints their message on one line and exits with their ``exit_code``, without a
traceback; anything else that escapes is a bug and keeps its traceback.
"""


class GenzooError(Exception):
    """A problem with the user's input or files; the message names the problem and the fix."""

    exit_code = 2


class TrainingDiverged(GenzooError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""

    exit_code = 1


class RunFailed(GenzooError):
    """A process of a data-parallel run died; the last good checkpoint is kept."""

    exit_code = 1
