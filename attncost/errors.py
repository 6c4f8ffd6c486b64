"""Errors that mean the user's input is wrong: the CLI turns them into exit 2."""


class AttncostError(Exception):
    """Bad input: a message that says what is wrong and what to do."""


class ModelError(AttncostError):
    """The model file, config or the model itself cannot be used."""


class SpecError(AttncostError):
    """A GPU or variant spec file is malformed or names something unknown."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message: enough to say what went wrong."""
    text = str(exc).strip().splitlines()
    return text[0] if text else ""
