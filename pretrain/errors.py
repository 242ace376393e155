"""The one exception type for bad user input.

Every layer raises :class:`InputError` with a single line that names the offending path, key or
value and what was expected; the CLI prints it as ``error: <message>`` and exits with code 2.
"""


class InputError(ValueError):
    """Bad input from the user (path, checkpoint, config value). The message is one line."""
