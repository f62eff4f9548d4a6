"""The one exception the data layer raises for bad input files, and how messages list values."""
from typing import Iterable

from salt_jax import errors


class DataError(errors.BadInput):
  """A Kaggle data file is missing, unreadable or inconsistent; the message names the path or id."""


def plain(value):
  """NumPy scalars -> Python values, so messages read 'abc' and 3, not np.str_('abc') and np.int64(3)."""
  return value.item() if hasattr(value, "item") and getattr(value, "ndim", None) == 0 else value


def preview(values: Iterable, n: int = 3) -> str:
  """The first `n` values for an error message: "'a', 'b', 'c' (and 7 more)"."""
  values = [plain(v) for v in values]
  shown = ", ".join(repr(v) for v in values[:n])
  return shown + (f" (and {len(values) - n} more)" if len(values) > n else "")
