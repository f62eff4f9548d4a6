"""SEG-Y files for `segment`: open a post-stack volume or a 2-D line, read its amplitudes, and write a
result back with the source's geometry and headers.

A file opens as a 3-D volume when segyio finds a sorted inline x crossline grid in the trace headers (the
inline and crossline numbers at bytes `iline_byte` / `xline_byte`, segyio's defaults 189 and 193) with more
than one inline and more than one crossline. Otherwise it is a 2-D line: its traces in file order, as
segyio reads them with `ignore_geometry=True`; but when those header bytes hold several inlines *and*
several crosslines that do not make a complete grid (a missing trace, a truncated volume, wrong byte
positions) the file is refused. Both are seen as a cube (inlines, crosslines, samples); a 2-D line is one
inline of `n_traces` crosslines (its trace indices).

Samples may be in any format segyio reads (SAMPLE_FORMATS: 1-, 2-, 4- and 8-byte integers and floats),
big-endian (the standard) or little-endian: the byte order is read from the binary header's sample format
code, which is valid in one order only.

The output holds the result as 4-byte IEEE floats (binary header sample format 5) in the source's byte
order. For a source with 4-byte samples it is a copy of the file (text, binary and trace headers byte for
byte) whose trace samples are overwritten, as segyio recommends; other sample sizes change the traces'
length, so segyio creates the file with the source's size and its text, binary and trace headers are
copied over.
"""
import dataclasses
import pathlib
import shutil
from typing import Iterator, Optional, Tuple

import numpy as np
import segyio

from salt_jax import errors

SUFFIXES = (".sgy", ".segy")
DEFAULT_ILINE_BYTE = 189
DEFAULT_XLINE_BYTE = 193
IEEE_FLOAT = 5
# Binary header sample format code -> (name, bytes per sample): the formats segyio reads.
SAMPLE_FORMATS = {1: ("4-byte IBM float", 4), 2: ("4-byte signed integer", 4), 3: ("2-byte signed integer", 2),
                  IEEE_FLOAT: ("4-byte IEEE float", 4), 6: ("8-byte IEEE float", 8),
                  8: ("1-byte signed integer", 1), 9: ("8-byte signed integer", 8),
                  10: ("4-byte unsigned integer", 4), 11: ("2-byte unsigned integer", 2),
                  12: ("8-byte unsigned integer", 8), 16: ("1-byte unsigned integer", 1)}
# Codes SEG-Y rev 2 defines that segyio cannot read.
UNREADABLE_FORMATS = {4: "4-byte fixed point with gain", 7: "3-byte signed integer",
                      15: "3-byte unsigned integer"}
_HEADERS = 3600                    # the text and binary headers
_FORMAT_BYTES = slice(3224, 3226)  # the binary header's sample format code (file bytes 3225-3226)


class SegyError(errors.BadInput):
  """A SEG-Y file segment cannot use (unreadable, truncated, irregular, unsupported samples); names it."""


@dataclasses.dataclass(frozen=True)
class Volume:
  """A SEG-Y file's geometry: inline numbers (n_il,) and crossline numbers (n_xl,) of a 3-D volume, or
  for a 2-D line ilines [0] and xlines the trace indices (n_traces,); n_samples per trace."""
  path: pathlib.Path
  ilines: np.ndarray
  xlines: np.ndarray
  n_samples: int
  sample_format: int
  iline_byte: int
  xline_byte: int
  is_3d: bool
  endian: str = "big"

  @property
  def shape(self) -> Tuple[int, int, int]:
    """(inlines, crosslines, samples) of the cube."""
    return len(self.ilines), len(self.xlines), self.n_samples

  def open(self, mode: str = "r", path=None) -> segyio.SegyFile:
    """The file (or a copy of it at `path`) opened by segyio with this geometry."""
    target = str(self.path if path is None else path)
    if self.is_3d:
      return segyio.open(target, mode, iline=self.iline_byte, xline=self.xline_byte, endian=self.endian)
    return segyio.open(target, mode, ignore_geometry=True, endian=self.endian)


def _segyio_message(e: Exception) -> str:
  return str(e).splitlines()[0][:160] if str(e) else type(e).__name__


def format_code(path: pathlib.Path) -> Tuple[str, int]:
  """(byte order 'big' or 'little', sample format code): the order in which the binary header's code is a
  SEG-Y format; SegyError naming the file when neither is, or the file is shorter than its headers."""
  with open(path, "rb") as f:
    head = f.read(_HEADERS)
  if len(head) < _HEADERS:
    raise SegyError(f"{path}: not a readable SEG-Y file ({len(head)} bytes, shorter than its 3,600-byte headers)")
  codes = {order: int.from_bytes(head[_FORMAT_BYTES], order) for order in ("big", "little")}
  for order, code in codes.items():
    if code in SAMPLE_FORMATS or code in UNREADABLE_FORMATS:
      return order, code
  raise SegyError(f"{path}: not a readable SEG-Y file (its sample format code reads {codes['big']} big-endian "
                  f"and {codes['little']} little-endian; neither is a SEG-Y format)")


def open_volume(path, iline_byte: int = DEFAULT_ILINE_BYTE, xline_byte: int = DEFAULT_XLINE_BYTE) -> Volume:
  """The geometry of a post-stack SEG-Y file (see the module docstring); SegyError naming it otherwise."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise SegyError(f"{path}: no such file")
  endian, fmt = format_code(path)
  if fmt not in SAMPLE_FORMATS:
    raise SegyError(f"{path}: sample format {fmt} ({UNREADABLE_FORMATS[fmt]}) is not supported; segment reads "
                    f"formats {', '.join(map(str, SAMPLE_FORMATS))} (segyio's)")
  try:
    with segyio.open(str(path), iline=iline_byte, xline=xline_byte, endian=endian) as f:
      ilines, xlines, offsets = f.ilines, f.xlines, f.offsets
  except (RuntimeError, ValueError, IndexError, KeyError):  # no regular geometry: read it as traces
    ilines = xlines = offsets = None
  try:
    with segyio.open(str(path), ignore_geometry=True, endian=endian) as f:
      n_samples, n_traces = len(f.samples), f.tracecount
      headers = f.attributes(iline_byte)[:], f.attributes(xline_byte)[:]
  except (RuntimeError, ValueError, IndexError, KeyError, OSError) as e:
    raise SegyError(f"{path}: not a readable SEG-Y file (segyio: {_segyio_message(e)})") from e
  if offsets is not None and len(offsets) > 1:
    raise SegyError(f"{path}: {len(offsets)} offsets per trace position; segment reads post-stack data")
  if n_traces == 0 or n_samples == 0:
    raise SegyError(f"{path}: {n_traces} traces of {n_samples} samples; nothing to segment")
  common = dict(path=path, n_samples=n_samples, sample_format=fmt, iline_byte=iline_byte,
                xline_byte=xline_byte, endian=endian)
  if ilines is not None and len(ilines) > 1 and len(xlines) > 1:
    return Volume(ilines=np.asarray(ilines), xlines=np.asarray(xlines), is_3d=True, **common)
  n_il, n_xl = (len(np.unique(h)) for h in headers)
  if ilines is None and n_il > 1 and n_xl > 1:
    raise SegyError(f"{path}: the traces' inline and crossline numbers (bytes {iline_byte}, {xline_byte}) "
                    f"do not form a complete sorted grid ({n_il} inlines x {n_xl} crosslines for {n_traces} "
                    "traces); check --iline_byte and --xline_byte")
  return Volume(ilines=np.zeros(1, int), xlines=np.arange(n_traces), is_3d=False, **common)


def select(volume: Volume, inlines: Optional[Tuple[int, int]] = None,
           crosslines: Optional[Tuple[int, int]] = None) -> Tuple[np.ndarray, np.ndarray]:
  """(inline indices (n,), crossline indices (m,)) of the numbers in the inclusive ranges (None: all);
  SegyError when a range selects nothing or is given for a 2-D line."""
  picked = []
  for flag, numbers, span in (("--inlines", volume.ilines, inlines), ("--crosslines", volume.xlines,
                                                                      crosslines)):
    if span is None:
      picked.append(np.arange(len(numbers)))
      continue
    if not volume.is_3d:
      raise SegyError(f"{volume.path}: a 2-D line has no inline or crossline numbers; drop {flag}")
    index = np.flatnonzero((numbers >= span[0]) & (numbers <= span[1]))
    if not len(index):
      raise SegyError(f"{volume.path}: {flag}={span[0]}:{span[1]} selects nothing; the volume's numbers run "
                      f"from {numbers.min()} to {numbers.max()}")
    picked.append(index)
  return picked[0], picked[1]


# Reads go through segyio's buffered file reads, not f.mmap(): a memory map would add the file's pages to
# the process's resident memory beside the copies read out of it.
def all_traces(volume: Volume) -> np.ndarray:
  """(n_traces, n_samples) the whole file's samples as segyio decodes them (SAMPLE_FORMATS' types), one copy."""
  with volume.open() as f:
    return f.trace.raw[:]


def inline_rows(volume: Volume, il_index: np.ndarray, xl_index: np.ndarray) -> Iterator[np.ndarray]:
  """Per selected inline, its (len(xl_index), n_samples) selected traces (a 2-D line: one row, the line)."""
  with volume.open() as f:
    for i in il_index:
      row = f.iline[volume.ilines[i]] if volume.is_3d else f.trace.raw[:]
      yield row[xl_index]


def write_like(volume: Volume, target, values: np.ndarray, il_index: np.ndarray, xl_index: np.ndarray,
               fill: float = 0.0) -> None:
  """Writes at `target` (an existing file path that the caller replaces atomically) a copy of the source
  whose traces hold `values` (len(il_index), len(xl_index), n_samples) as 4-byte IEEE floats; the traces
  outside the selection hold `fill`."""
  if values.shape != (len(il_index), len(xl_index), volume.n_samples):
    raise ValueError(f"values {values.shape} do not match the selection "
                     f"{(len(il_index), len(xl_index), volume.n_samples)}")
  if SAMPLE_FORMATS[volume.sample_format][1] == 4:
    shutil.copyfile(volume.path, target)
    if volume.sample_format != IEEE_FLOAT:
      with segyio.open(str(target), "r+", ignore_geometry=True, endian=volume.endian) as g:
        g.bin.update({segyio.BinField.Format: IEEE_FLOAT})  # same 4 bytes per sample: trace sizes unchanged
  else:
    _create_float_copy(volume, target)
  where = {int(i): k for k, i in enumerate(il_index)}
  with volume.open("r+", target) as g:  # reopened: segyio encodes the samples in the file's new format
    for i, il in enumerate(volume.ilines):
      row = np.full((len(volume.xlines), volume.n_samples), fill, np.float32)
      if i in where:
        row[xl_index] = values[where[i]]
      if volume.is_3d:
        g.iline[il] = row
      else:
        for t in range(len(row)):
          g.trace[t] = row[t]


def _create_float_copy(volume: Volume, target) -> None:
  """Creates at `target` the source's layout with 4-byte IEEE float samples (zero): its text, extended
  text, binary and trace headers, in its byte order (segyio.create, then the headers assigned)."""
  with segyio.open(str(volume.path), ignore_geometry=True, endian=volume.endian) as src:
    spec = segyio.spec()
    spec.samples, spec.tracecount, spec.format = src.samples, src.tracecount, IEEE_FLOAT
    spec.ext_headers, spec.endian = src.ext_headers, volume.endian
    with segyio.create(str(target), spec) as dst:
      for i in range(1 + src.ext_headers):
        dst.text[i] = src.text[i]
      dst.bin = src.bin
      dst.bin.update({segyio.BinField.Format: IEEE_FLOAT})
      dst.header = src.header
      zeros = np.zeros(len(src.samples), np.float32)
      for t in range(src.tracecount):
        dst.trace[t] = zeros
