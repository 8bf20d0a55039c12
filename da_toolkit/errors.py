"""Errors a user can fix. The CLI prints them as one line and exits with status 2."""


class UserError(Exception):
    """Bad input: a recipe key, a value, a missing file. The message says what and how to fix it."""
