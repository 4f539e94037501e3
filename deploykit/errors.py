"""The two kinds of failure the CLI distinguishes, by exit code.

BadInput (exit 2) is raised before anything is touched; OperationFailed (exit 1) after
input was accepted, once the rollback has run.
"""


class DeploykitError(Exception):
    exit_code = 1


class BadInput(DeploykitError):
    """A value given by the operator (flag or spec key) is not acceptable."""

    exit_code = 2

    def __init__(self, where: str, value: object, why: str):
        self.where, self.value, self.why = where, value, why
        super().__init__(f"{where} {_show(value)}: {why}")


class OperationFailed(DeploykitError):
    exit_code = 1


def _show(value: object) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    # Hostile values can be huge; the message stays one line and readable.
    return text if len(text) <= 80 else text[:77] + "...'"
