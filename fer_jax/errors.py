"""The one exception type for mistakes a user can make and fix."""


class UserError(Exception):
  """A bad path, corrupt record, unknown name, ...: printed as one line, exit 2.

  The message must name the offending thing and say what to do about it.
  """
