"""The one exception the workshop raises for a user's mistake; its own module so any module can import it."""


class WorkshopError(Exception):
    """An expected mistake (bad flag, missing cache, ...): printed as one line, no traceback."""
