"""The one exception type that reaches the user as a single line."""


class TrajectoryError(Exception):
    """A problem with the user's input or environment, stated in one line.

    The CLI prints ``trajectory: <message>`` and exits with status 2; nothing
    else is printed.  Messages name what was wrong and what to do about it.
    """
