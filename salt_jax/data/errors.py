"""The one exception the data layer raises for bad input files (kept apart to avoid circular imports)."""


class DataError(ValueError):
  """A Kaggle data file is missing, unreadable or inconsistent; the message names the path or id."""
