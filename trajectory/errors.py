"""The exceptions that reach the user as a single line.

The CLI prints ``trajectory: <message>`` and exits with status 2; nothing else is printed.  Messages name
what was wrong and what to do about it.  Subclasses exist where code branches on the kind of problem.
"""


class TrajectoryError(Exception):
    """A problem with the user's input or environment, stated in one line."""


class ConfigError(TrajectoryError, ValueError):
    """A setting out of range or of the wrong type (a manifest field, a CLI option, an API argument)."""


class ManifestError(ConfigError):
    """A manifest that cannot be read or names something invalid; the message names the file and field."""


class RevisionNotFoundError(TrajectoryError):
    """A revision (branch, tag or checkpoint folder) that the model does not have."""


class HubUnreachableError(TrajectoryError):
    """The Hugging Face Hub (or the endpoint configured in its place) could not be contacted."""


class DiskFullError(TrajectoryError):
    """A write that found no space left on its filesystem; the message names the path and the space free."""


class DataError(TrajectoryError):
    """Evaluation or training text that is missing, too short, or unusable with the tokenizer."""


class LoadError(TrajectoryError):
    """Weights, a config or a tokenizer that cannot be loaded safely."""


def exception_chain(exc: BaseException | None):
    """``exc`` and every exception it was raised from or during, innermost last."""
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


class TrajectoryWarning(UserWarning):
    """Something the user should know that does not stop the run (a skipped store file, a restarted twin run).

    The CLI prints each as one ``trajectory: <message>`` line on stderr; the Python API leaves them to
    ``warnings``, so a notebook can filter or raise them.
    """
