"""One exception type for problems a person can fix (not bugs): the CLI prints it as one line."""


class UpcertError(Exception):
    """A problem with input, environment or a board, with a message that says what to do."""
