"""One exception type for mistakes a user can fix.

The CLI prints these as a single ``error: ...`` line (no traceback) and exits with
status 2; anything else is a bug and keeps its traceback.
"""


class LangpruneError(Exception):
    """A user-facing error: the message names the field or file and what to do."""
