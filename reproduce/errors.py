"""The one exception type users see: a one-line message that names the fix."""


class ReproduceError(Exception):
    """Bad input or environment. The CLI prints `error: <message>` and exits 2, no traceback."""
