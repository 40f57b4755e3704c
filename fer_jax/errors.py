"""The one exception type for mistakes a user can make and fix."""


class UserError(Exception):
  """A bad path, corrupt record, unknown name, ...: printed as one line, exit 2.

  The message must name the offending thing and say what to do about it.
  """


class Interrupted(Exception):
  """SIGTERM or SIGINT stopped training after a checkpoint was saved."""

  def __init__(self, message: str, signal_number: int):
    super().__init__(message)
    self.signal_number = signal_number
