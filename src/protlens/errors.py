"""The one exception type a user can cause; the CLI prints it as one line and exits with code 2."""


class InputError(ValueError):
    """Bad user input (file, record, option). The message names the record and the problem."""
