"""MDIO volumes for `segment` (the `multidimio` package, imported as `mdio`): a post-stack 2-D or 3-D MDIO
dataset in, `<stem>_probs.mdio` (or `_mask.mdio`) out.

The input's default variable (`attrs["attributes"]["defaultVariableName"]`, "amplitude" for the
library's post-stack templates) is read through xarray, (inline, crossline, time or depth) or (cdp, time
or depth) for a 2-D line; dead traces (trace_mask False) read as 0. The output is the input dataset
(coordinates, trace headers, trace mask, SEG-Y file headers, attributes) whose default variable is
replaced by `salt`, float32 in the input's chunks, holding the probability or the mask, so `mdio.open_mdio`
reads it and `mdio.mdio_to_segy` writes it out with the source's headers. Each chunk of sections writes its
region of `salt`; the chunks of a volume never share a Zarr chunk of it (volume.plan_chunks aligns them
with `write_align`), so workers can write side by side.

Converting a SEG-Y to MDIO is the library's job (README "MDIO"): `mdio segy import`.
"""
import dataclasses
import pathlib
from typing import Dict, Tuple

import numpy as np

from salt_jax import errors
from salt_jax.seismic import segy

SUFFIXES = (".mdio",)
OUTPUT_VARIABLE = "salt"


class MdioError(errors.BadInput):
  """An MDIO dataset segment cannot use (unreadable, not post-stack); names it."""


def _open(path):
  import mdio
  return mdio.open_mdio(str(path))


@dataclasses.dataclass(frozen=True)
class MdioVolume(segy.Grid):
  """An MDIO dataset's geometry: inline and crossline numbers of a 3-D volume (a 2-D line: ilines [0],
  xlines its trace indices), samples per trace, the variable read and its dimension names and chunks."""
  path: pathlib.Path
  ilines: np.ndarray
  xlines: np.ndarray
  n_samples: int
  is_3d: bool
  variable: str
  dims: Tuple[str, ...]
  chunks: Tuple[int, ...]

  @property
  def write_align(self) -> Dict[str, int]:
    """Sections per Zarr chunk of the output along each direction: no chunk of sections may cross one."""
    return {"inline": self.chunks[0], "crossline": self.chunks[1]} if self.is_3d else {"inline": 1}

  def _index(self, il_pos: np.ndarray, xl_pos: np.ndarray) -> Dict[str, np.ndarray]:
    if self.is_3d:
      return {self.dims[0]: np.asarray(il_pos), self.dims[1]: np.asarray(xl_pos)}
    return {self.dims[0]: np.asarray(xl_pos)}

  def _read(self, path, variable: str, il_pos: np.ndarray, xl_pos: np.ndarray, live: bool) -> np.ndarray:
    """(len(il_pos), len(xl_pos), n_samples) values of `variable` (dead traces 0 when `live`)."""
    ds = _open(path)
    values = ds[variable].isel(self._index(il_pos, xl_pos)).values
    if live and "trace_mask" in ds:
      values = np.where(ds["trace_mask"].isel(self._index(il_pos, xl_pos)).values[..., None], values, 0)
    return values if self.is_3d else values[None]

  def read_sections(self, direction: str, positions: np.ndarray, across: np.ndarray) -> np.ndarray:
    """(k, len(across), n_samples): the inlines (crosslines) at `positions`, at crossline (inline) indices
    `across` (segy.Volume.read_sections)."""
    if direction == "inline" or not self.is_3d:
      return self._read(self.path, self.variable, positions if self.is_3d else [0], across, True)
    return self._read(self.path, self.variable, across, positions, True).transpose(1, 0, 2)

  def sample_traces(self, max_samples: int) -> Tuple[np.ndarray, int]:
    """((n, n_samples), n): every trace up to `max_samples` samples, else evenly spaced traces in (inline,
    crossline) order (segy.sample_positions)."""
    if self.n_traces * self.n_samples <= max_samples:
      return self._read(self.path, self.variable, np.arange(len(self.ilines)), np.arange(len(self.xlines)),
                        True).reshape(-1, self.n_samples), self.n_traces
    import xarray as xr
    picks = segy.sample_positions(self.n_traces, max(2, max_samples // self.n_samples))
    il, xl = np.divmod(picks, len(self.xlines))
    ds = _open(self.path)
    index = {self.dims[0]: xr.DataArray(il, dims="t"), self.dims[1]: xr.DataArray(xl, dims="t")} \
        if self.is_3d else {self.dims[0]: xr.DataArray(xl, dims="t")}
    values = ds[self.variable].isel(index).values
    if "trace_mask" in ds:
      values = np.where(ds["trace_mask"].isel(index).values[:, None], values, 0)
    return values, len(picks)

  def create_output(self, target) -> None:
    """Writes at `target` the input dataset with its default variable replaced by OUTPUT_VARIABLE, float32
    zeros in the same chunks (stored as Zarr's fill value)."""
    import dask.array
    import mdio
    ds = _open(self.path)
    source = ds[self.variable]
    out = ds.drop_vars(self.variable)
    out[OUTPUT_VARIABLE] = (source.dims, dask.array.zeros(source.shape, dtype=np.float32, chunks=self.chunks))
    # (dask.array.zeros takes dtype by keyword only: a positional one is ignored and gives float64)
    out[OUTPUT_VARIABLE].encoding = {"chunks": self.chunks, "fill_value": np.float32(0)}
    attributes = dict(out.attrs.get("attributes", {}))
    attributes["defaultVariableName"] = OUTPUT_VARIABLE
    out.attrs["attributes"] = attributes
    mdio.to_mdio(out, str(target), mode="w")

  def _region(self, il_pos: np.ndarray, xl_pos: np.ndarray) -> Dict[str, slice]:
    for pos in (il_pos, xl_pos):
      if len(pos) > 1 and not np.all(np.diff(pos) == 1):
        raise ValueError("MDIO regions are contiguous ranges of inlines and crosslines")
    xl = slice(int(xl_pos[0]), int(xl_pos[-1]) + 1)
    if not self.is_3d:
      return {self.dims[0]: xl, self.dims[1]: slice(None)}
    return {self.dims[0]: slice(int(il_pos[0]), int(il_pos[-1]) + 1), self.dims[1]: xl,
            self.dims[2]: slice(None)}

  def write_output(self, target, il_pos: np.ndarray, xl_pos: np.ndarray, values: np.ndarray) -> None:
    """Writes (len(il_pos), len(xl_pos), n_samples) values into that region of the output's variable."""
    import mdio
    import xarray as xr
    data = values.astype(np.float32) if self.is_3d else values[0].astype(np.float32)
    region = xr.Dataset({OUTPUT_VARIABLE: (self.dims, data)})
    mdio.to_mdio(region, str(target), mode="r+", region=self._region(il_pos, xl_pos))

  def read_output(self, target, il_pos: np.ndarray, xl_pos: np.ndarray) -> np.ndarray:
    """(len(il_pos), len(xl_pos), n_samples) float32 of the output's variable."""
    return self._read(target, OUTPUT_VARIABLE, il_pos, xl_pos, False).astype(np.float32)


def open_volume(path) -> MdioVolume:
  """The geometry of a post-stack MDIO dataset; MdioError naming it otherwise."""
  path = pathlib.Path(path)
  if not path.is_dir():
    raise MdioError(f"{path}: no such MDIO dataset (a folder)")
  try:
    ds = _open(path)
    attributes = ds.attrs.get("attributes", {})
    variable = attributes["defaultVariableName"]
    data = ds[variable]
  except (OSError, KeyError, ValueError) as e:
    raise MdioError(f"{path}: not a readable MDIO dataset ({type(e).__name__}: {str(e)[:120]})") from e
  if attributes.get("gatherType", "stacked") != "stacked" or data.ndim not in (2, 3):
    raise MdioError(f"{path}: a {data.ndim}-D {attributes.get('gatherType')} dataset {data.dims}; segment "
                    "reads post-stack data (2-D lines and 3-D volumes)")
  chunks = tuple(int(c) for c in data.encoding.get("chunks", data.shape))
  if data.ndim == 3:
    ilines, xlines = ds[data.dims[0]].values, ds[data.dims[1]].values
    return MdioVolume(path, np.asarray(ilines), np.asarray(xlines), data.shape[2], True, variable,
                      tuple(data.dims), chunks)
  return MdioVolume(path, np.zeros(1, int), np.arange(data.shape[0]), data.shape[1], False, variable,
                    tuple(data.dims), chunks)
