"""The one exception type for bad user input.

Every layer raises :class:`InputError` with a single line that names the offending path, key or
value and what was expected; the CLI prints it as ``error: <message>`` and exits with code 2.
"""


class InputError(ValueError):
    """Bad input from the user (path, checkpoint, config value). The message is one line."""


def one_line(exc: BaseException) -> str:
    """The message as one line. A DataLoader worker re-raises our error with its traceback in the
    message ("Caught InputError in DataLoader worker ... Original Traceback ..."): keep its last line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) > 1 and "Original Traceback" in str(exc):
        return lines[-1].split(": ", 1)[-1]
    return lines[0] if lines else type(exc).__name__
