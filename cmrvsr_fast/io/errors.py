"""The error every reader raises for a file that is not the data it should be: scanner I/O (io/) and the
dataset readers (data/readers.py) alike, so callers catch one type."""


class DataError(ValueError):
    """A file that cannot be read as the data it should be; the message names the file and the reason."""
