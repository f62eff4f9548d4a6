"""The checkout's own folders, found from this package's location rather than the working directory: the
repository root (configs/, scripts/, salt_jax/) and the shared folder beside it (../shared: the data and the
PyTorch reference), so that defaults naming them hold wherever a command is started."""
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def resolve(path) -> pathlib.Path:
  """A path the README gives relative to the repository (configs/cpu_small.py): as given when it is
  absolute or exists from the working directory, else under ROOT."""
  path = pathlib.Path(path)
  return path if path.is_absolute() or path.exists() else ROOT / path
