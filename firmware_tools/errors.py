"""The one error every ``gwtool`` subcommand raises for a failure the user can act on."""


class ToolError(Exception):
    """A failure to report as one line (exit code 1)."""
