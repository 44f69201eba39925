"""The project's own error types: every user-facing failure is one of these, with a message
that names the file and the problem (the CLI prints it without a traceback)."""


class LowbitError(Exception):
    """Base class for errors the CLI reports as one clear line."""


class FormatError(LowbitError):
    """A .lowbit file (or another input file) violates its format."""

    def __init__(self, path, problem):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ConvertError(LowbitError):
    """A checkpoint cannot be converted (unsupported, malformed, refused)."""
