"""SEG-Y files for `segment`: open a post-stack volume or a 2-D line, read its amplitudes, and write a
result back with the source's geometry and headers.

A file opens as a 3-D volume when segyio finds a sorted inline x crossline grid in the trace headers (the
inline and crossline numbers at bytes `iline_byte` / `xline_byte`, segyio's defaults 189 and 193) with more
than one inline and more than one crossline. Otherwise it is a 2-D line: its traces in file order, as
segyio reads them with `ignore_geometry=True`; but when those header bytes hold several inlines *and*
several crosslines that do not make a complete grid (a missing trace, a truncated volume, wrong byte
positions) the file is refused, and so is pre-stack data: traces whose offsets (trace header byte 37)
differ, checked first, since gathers read at other header bytes look like an irregular grid. Both are
seen as a cube (inlines, crosslines, samples); a 2-D line is one
inline of `n_traces` crosslines (its trace indices).

Samples may be in any format segyio reads (SAMPLE_FORMATS: 1-, 2-, 4- and 8-byte integers and floats),
big-endian (the standard) or little-endian: the byte order is read from the binary header's sample format
code, which is valid in one order only.

The output holds the result as 4-byte IEEE floats (binary header sample format 5) in the source's byte
order. For a source with 4-byte samples it is a copy of the file whose trace samples are overwritten, as
segyio recommends; other sample sizes change the traces' length, so the file is written anew from the
source's raw headers (text, extended text, binary, and each 240-byte trace header) with 4-byte samples.
Either way every header byte is the source's but the binary header's sample format code.
"""
import dataclasses
import os
import pathlib
from typing import Optional, Tuple

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
_TEXT = 3200                       # a text header
_FORMAT_BYTES = slice(3224, 3226)  # the binary header's sample format code (file bytes 3225-3226)
_EXT_HEADERS_BYTES = slice(3504, 3506)  # the number of extended text headers (file bytes 3505-3506)
_TRACE_HEADER = 240


class SegyError(errors.BadInput):
  """A SEG-Y file segment cannot use (unreadable, truncated, irregular, unsupported samples); names it."""


class Grid:
  """What a post-stack volume's grid says of it, for any format: its fields ilines (n_il,), xlines
  (n_xl,), n_samples and is_3d (a 2-D line: ilines [0], xlines the trace indices)."""

  @property
  def shape(self) -> Tuple[int, int, int]:
    """(inlines, crosslines, samples) of the cube."""
    return len(self.ilines), len(self.xlines), self.n_samples

  @property
  def n_traces(self) -> int:
    return len(self.ilines) * len(self.xlines)

  @property
  def geometry(self) -> str:
    return "3-D" if self.is_3d else "2-D line"


@dataclasses.dataclass(frozen=True)
class Volume(Grid):
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
  inline_sorted: bool = True  # a 3-D file's traces run inline by inline (else crossline by crossline)

  def open(self) -> segyio.SegyFile:
    """The file opened by segyio (read only) with this geometry."""
    if self.is_3d:
      return segyio.open(str(self.path), iline=self.iline_byte, xline=self.xline_byte, endian=self.endian)
    return segyio.open(str(self.path), ignore_geometry=True, endian=self.endian)

  # Reading.
  def read_sections(self, direction: str, positions: np.ndarray, across: np.ndarray) -> np.ndarray:
    """(k, len(across), n_samples) samples (segyio's decoded type) of the inlines (direction "inline") or
    crosslines ("crossline") at `positions` (indices into ilines or xlines), at the crossline (inline)
    indices `across`. Reads those sections' traces only (segyio's buffered reads, no memory map)."""
    out = None
    with self.open() as f:
      for k, i in enumerate(positions):
        if not self.is_3d:
          row = f.trace.raw[:]
        else:
          row = f.iline[self.ilines[i]] if direction == "inline" else f.xline[self.xlines[i]]
        if out is None:
          out = np.empty((len(positions), len(across), self.n_samples), row.dtype)
        out[k] = row[across]
    return out

  def sample_traces(self, max_samples: int) -> Tuple[np.ndarray, int]:
    """((n, n_samples) samples, n): every trace when the file holds at most `max_samples` samples, else
    n = max_samples // n_samples traces spaced evenly through the file in trace order (the first and
    the last included; the same traces at every call)."""
    with segyio.open(str(self.path), ignore_geometry=True, endian=self.endian) as f:
      if self.n_traces * self.n_samples <= max_samples:
        return f.trace.raw[:], self.n_traces
      picks = sample_positions(self.n_traces, max(2, max_samples // self.n_samples))
      first = f.trace[int(picks[0])]
      out = np.empty((len(picks), self.n_samples), first.dtype)
      for k, t in enumerate(picks):
        out[k] = f.trace[int(t)]
      return out, len(picks)

  # The output: this file's headers, 4-byte IEEE float samples.
  def trace_numbers(self, il_pos: np.ndarray, xl_pos: np.ndarray) -> np.ndarray:
    """(len(il_pos), len(xl_pos)) int64: the file's trace number of each (inline, crossline) position."""
    il, xl = np.asarray(il_pos, np.int64)[:, None], np.asarray(xl_pos, np.int64)[None, :]
    if not self.is_3d or self.inline_sorted:
      return il * len(self.xlines) + xl
    return xl * len(self.ilines) + il

  def create_output(self, target, chunk_bytes: int = 1 << 26) -> None:
    """Creates at `target` the source's layout with 4-byte IEEE float samples, all 0.0: its text,
    extended text and binary headers and every 240-byte trace header copied byte for byte, only the
    binary header's sample format code changed (5, in the source's byte order). Reads `chunk_bytes` of
    traces at a time."""
    head = _headers_size(self.path, self.endian)
    width = _TRACE_HEADER + SAMPLE_FORMATS[self.sample_format][1] * self.n_samples
    per_chunk = max(1, chunk_bytes // width)
    with open(self.path, "rb") as src, open(target, "wb") as dst:
      headers = bytearray(src.read(head))
      headers[_FORMAT_BYTES] = IEEE_FLOAT.to_bytes(2, self.endian)
      dst.write(headers)
      for start in range(0, self.n_traces, per_chunk):
        k = min(per_chunk, self.n_traces - start)
        traces = np.frombuffer(src.read(k * width), np.uint8).reshape(k, width)
        out = np.zeros((k, _TRACE_HEADER + 4 * self.n_samples), np.uint8)
        out[:, :_TRACE_HEADER] = traces[:, :_TRACE_HEADER]
        dst.write(out.tobytes())
      dst.flush()
      os.fsync(dst.fileno())

  @property
  def _float_type(self) -> np.dtype:
    """4-byte IEEE floats in the file's byte order."""
    return np.dtype(np.float32).newbyteorder(">" if self.endian == "big" else "<")

  def _output_offsets(self, target, il_pos: np.ndarray, xl_pos: np.ndarray) -> np.ndarray:
    """(len(il_pos), len(xl_pos)) byte offsets of those traces' samples in the output."""
    head = _headers_size(pathlib.Path(target), self.endian)
    return head + self.trace_numbers(il_pos, xl_pos) * (_TRACE_HEADER + 4 * self.n_samples) + _TRACE_HEADER

  def write_output(self, target, il_pos: np.ndarray, xl_pos: np.ndarray, values: np.ndarray) -> None:
    """Writes (len(il_pos), len(xl_pos), n_samples) values into those traces of the output at `target`
    (create_output), as 4-byte IEEE floats in the source's byte order, and syncs them to disk. Writers of
    other traces may write the same file at once."""
    encoded = np.ascontiguousarray(values, self._float_type)
    fd = os.open(target, os.O_WRONLY)
    try:
      for (a, b), offset in np.ndenumerate(self._output_offsets(target, il_pos, xl_pos)):
        os.pwrite(fd, encoded[a, b].tobytes(), int(offset))
      os.fsync(fd)
    finally:
      os.close(fd)

  def read_output(self, target, il_pos: np.ndarray, xl_pos: np.ndarray) -> np.ndarray:
    """(len(il_pos), len(xl_pos), n_samples) float32: those traces of the output at `target`."""
    dtype = self._float_type
    out = np.empty((len(il_pos), len(xl_pos), self.n_samples), np.float32)
    with open(target, "rb") as f:
      for (a, b), offset in np.ndenumerate(self._output_offsets(target, il_pos, xl_pos)):
        f.seek(int(offset))
        out[a, b] = np.frombuffer(f.read(4 * self.n_samples), dtype)
    return out


def count(n: int, noun: str) -> str:
  """"1 trace", "2 traces": a count with its noun, singular for one."""
  return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


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
  if path.stat().st_size == _headers_size(path, endian):
    raise SegyError(f"{path}: no traces (the file ends after its headers); nothing to segment")
  try:
    with segyio.open(str(path), ignore_geometry=True, endian=endian) as f:
      n_samples, n_traces = len(f.samples), f.tracecount
      headers = f.attributes(iline_byte)[:], f.attributes(xline_byte)[:]
      offsets = np.unique(f.attributes(segyio.TraceField.offset)[:])
  except (RuntimeError, ValueError, IndexError, KeyError, OSError) as e:
    raise SegyError(f"{path}: not a readable SEG-Y file (segyio: {_segyio_message(e)})") from e
  if n_samples == 0:
    raise SegyError(f"{path}: {count(n_traces, 'trace')} of 0 samples; nothing to segment")
  if len(offsets) > 1:  # before the grid: gathers at other header bytes look like an irregular grid
    raise SegyError(f"{path}: its traces hold {len(offsets):,} different offsets (trace header byte 37): "
                    "pre-stack data; segment reads post-stack data (one trace per position)")
  try:
    with segyio.open(str(path), iline=iline_byte, xline=xline_byte, endian=endian) as f:
      ilines, xlines, sorting = f.ilines, f.xlines, f.sorting
  except (RuntimeError, ValueError, IndexError, KeyError):  # no regular geometry: read it as traces
    ilines = xlines = sorting = None
  common = dict(path=path, n_samples=n_samples, sample_format=fmt, iline_byte=iline_byte,
                xline_byte=xline_byte, endian=endian)
  if ilines is not None and len(ilines) > 1 and len(xlines) > 1:
    return Volume(ilines=np.asarray(ilines), xlines=np.asarray(xlines), is_3d=True,
                  inline_sorted=sorting != segyio.TraceSortingFormat.CROSSLINE_SORTING, **common)
  n_il, n_xl = (len(np.unique(h)) for h in headers)
  if ilines is None and n_il > 1 and n_xl > 1:
    raise SegyError(f"{path}: the traces' inline and crossline numbers (bytes {iline_byte}, {xline_byte}) "
                    f"do not form a complete sorted grid ({count(n_il, 'inline')} x "
                    f"{count(n_xl, 'crossline')} for {count(n_traces, 'trace')}); check --iline_byte and "
                    "--xline_byte")
  return Volume(ilines=np.zeros(1, int), xlines=np.arange(n_traces), is_3d=False, **common)


def _headers_size(path: pathlib.Path, endian: str) -> int:
  """Bytes before the first trace: the 3,600-byte text and binary headers and the extended text headers
  (their count at binary header bytes 3505-3506)."""
  with open(path, "rb") as f:
    f.seek(_EXT_HEADERS_BYTES.start)
    n_ext = int.from_bytes(f.read(2), endian, signed=True)
  return _HEADERS + _TEXT * max(n_ext, 0)


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


def sample_positions(n: int, k: int) -> np.ndarray:
  """(<= k,) int64: k positions spread evenly over 0..n-1, the first and the last included (all if k >= n)."""
  if k >= n:
    return np.arange(n, dtype=np.int64)
  return np.unique(np.rint(np.linspace(0, n - 1, k)).astype(np.int64))
