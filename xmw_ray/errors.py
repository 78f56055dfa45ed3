"""The one exception type for bad user input: the CLI turns it into a single line and exit status 2."""


class XmwInputError(Exception):
    """Bad input (file, field, value): the message names the file or key and the problem, on one line."""
