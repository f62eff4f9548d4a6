"""Post-stack volumes for `segment`: segmented chunk by chunk in bounded memory, resumably, in one process
or as tasks of Dask workers, all giving the same bytes.

A volume is any reader with the geometry and methods of segy.Volume (path, ilines, xlines, n_samples,
is_3d, read_sections, sample_traces, create_output, write_output, read_output); its sections are images
(samples, traces), depth or time down.

Scaling: the amplitudes are clipped to percentiles of the whole file and mapped onto 0..255, the same for
every section. Up to EXACT_PERCENTILE_SAMPLES samples (2**25: a 128 MiB file of 4-byte samples) they are
the exact percentiles of every sample; above, those of a deterministic sample of whole traces, the
EXACT_PERCENTILE_SAMPLES // n_samples traces spaced evenly through the file (segy.sample_positions).

Chunks: each direction's selected sections are cut, in order, into chunks of `chunk_sections`
consecutive sections (default: as many as hold CHUNK_PIXELS pixels, at least one). Chunk boundaries, and
the batches of windows inside a chunk (taken across its sections: infer.segment_stack), depend only on the
volume and the options, never on the number of workers or where a run resumed. Each chunk is read,
scaled, segmented and written into the output's traces on its own; memory is set by the chunk, not by the
volume. With `--sections=both` the crossline chunks run after every inline chunk: each reads back its
traces' inline result from the output and writes the mean of the two (or its mask).

Resuming: the output is built as `<out>/.<name>.partial/output<suffix>` beside `options.json` (the
options, the input's size and time, the snapshots and the amplitude range) and one marker per finished
chunk. The same command on an unfinished output skips the finished chunks and ends with the same bytes
as an uninterrupted run; other options or another input are refused in one line. When every chunk is
done the output is renamed into place and the folder removed.
"""
import contextlib
import dataclasses
import json
import os
import pathlib
import shutil
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Set, Tuple

import jax
import numpy as np
import tqdm
from absl import logging

from salt_jax import errors, fileio, viz
from salt_jax.geometry import TILE
from salt_jax.inference import ensemble
from salt_jax.seismic import files, infer, mdio_volume, sections, segy
from salt_jax.workdir import rundir

DIRECTIONS = {"inline": ("inline",), "crossline": ("crossline",), "both": ("inline", "crossline")}
WRITES = ("probs", "mask")
EXACT_PERCENTILE_SAMPLES = 2 ** 25
CHUNK_PIXELS = 2 ** 22  # pixels of the sections of one default chunk (~33 bytes each of working memory)
STATE_VERSION = 1


class Chunk(NamedTuple):
  """Sections start..stop-1 (positions in the selection of `direction`) of the volume; chunk `index`."""
  index: int
  direction: str
  start: int
  stop: int

  @property
  def n_sections(self) -> int:
    return self.stop - self.start


def volume_range(volume, percentiles: Tuple[float, float] = files.DEFAULT_PERCENTILES,
                 max_samples: int = EXACT_PERCENTILE_SAMPLES) -> Tuple[float, float, int]:
  """(lo, hi, traces read): the percentiles of every sample of the file when it holds at most `max_samples`
  samples, else of the evenly spaced traces of volume.sample_traces; InputError naming the file for NaN
  or infinite samples among those read. Holds at most `max_samples` samples."""
  samples, n = volume.sample_traces(max_samples)
  if samples.dtype.kind == "f" and not np.isfinite(np.sum(samples, dtype=np.float64)):
    bad = int(np.count_nonzero(~np.isfinite(samples)))
    raise files.InputError(f"{volume.path}: {bad} NaN or infinite sample(s); a volume must be finite")
  lo, hi = np.percentile(samples, percentiles, overwrite_input=True)  # partitions the copy in place
  return float(lo), float(hi), n


def plan_chunks(shape: Tuple[int, int, int], n_il: int, n_xl: int, directions: Sequence[str],
                chunk_sections: Optional[int] = None, align: Optional[Dict[str, Tuple[int, int]]] = None
                ) -> List[Chunk]:
  """The chunks of a selection of n_il inlines x n_xl crosslines of a (.., .., n_samples) volume, direction
  by direction in order (see the module docstring). align[direction] = (first, every): no chunk holds
  sections on both sides of a multiple of `every` in the volume's numbering, the selection starting at
  section `first` (an output stored in blocks of `every` sections: a chunk writes blocks no other
  chunk writes)."""
  chunks = []
  for direction in directions:
    n, across = (n_il, n_xl) if direction == "inline" else (n_xl, n_il)
    size = chunk_sections or max(1, CHUNK_PIXELS // (across * shape[2]))
    first, every = (align or {}).get(direction, (0, n + 1))
    start = 0
    while start < n:
      stop = min(n, start + size, (first + start) // every * every + every - first)
      chunks.append(Chunk(len(chunks), direction, start, stop))
      start = stop
  return chunks


def block(job: "Job", chunk: Chunk) -> Tuple[str, int]:
  """(direction, block): the block of the output a chunk writes in (its own index for a volume with no
  write_align); chunks of one block run one after the other."""
  every = getattr(job.volume, "write_align", {}).get(chunk.direction)
  if every is None:
    return chunk.direction, chunk.index
  first = int(job.il_index[0] if chunk.direction == "inline" else job.xl_index[0])
  return chunk.direction, (first + chunk.start) // every


@dataclasses.dataclass(frozen=True)
class Job:
  """What every chunk of one run needs (sent to Dask workers as it is)."""
  volume: Any
  il_index: np.ndarray
  xl_index: np.ndarray
  directions: Tuple[str, ...]
  write: str
  lo: float
  hi: float
  workdirs: Tuple[str, ...]
  kind: str
  folds: Optional[Tuple[int, ...]]
  stride: int
  batch_size: Optional[int]
  png_positions: Tuple[int, ...]  # positions in il_index of the inlines drawn as PNGs
  state: pathlib.Path

  @property
  def partial(self) -> pathlib.Path:
    return self.state / f"output{self.volume.path.suffix}"

  def marker(self, chunk: Chunk) -> pathlib.Path:
    return self.state / f"chunk_{chunk.index:06d}.npz"

  def backup(self, chunk: Chunk) -> pathlib.Path:
    return self.state / f"chunk_{chunk.index:06d}_before.npy"

  def positions(self, chunk: Chunk) -> Tuple[np.ndarray, np.ndarray]:
    """(inline indices, crossline indices) of the chunk's traces in the volume."""
    if chunk.direction == "inline":
      return self.il_index[chunk.start:chunk.stop], self.xl_index
    return self.il_index, self.xl_index[chunk.start:chunk.stop]


def run_chunk(job: Job, chunk: Chunk, snapshots: infer.Snapshots, loader: infer.SnapshotLoader) -> None:
  """Reads, scales, segments and writes one chunk, then records it finished (its marker holds the sum of
  the values it wrote and the votes of the PNG inlines it covers). Running it again gives the same bytes."""
  il_pos, xl_pos = job.positions(chunk)
  if chunk.direction == "inline":
    raw = job.volume.read_sections("inline", il_pos, xl_pos)              # (k, n_xl, n_samples)
  else:
    raw = job.volume.read_sections("crossline", xl_pos, il_pos)           # (k, n_il, n_samples)
  if raw.dtype.kind == "f" and not np.isfinite(np.sum(raw, dtype=np.float64)):
    raise files.InputError(f"{job.volume.path}: NaN or infinite samples in {chunk.direction}s "
                           f"{chunk.start}..{chunk.stop - 1} of the selection; a volume must be finite")
  stack = files.scale_uint8(raw, job.lo, job.hi).transpose(0, 2, 1)     # (k, n_samples, traces)
  del raw
  result = infer.segment_stack(stack, snapshots, loader, job.stride, job.write == "probs")
  values = (result.probs if job.write == "probs" else result.votes).transpose(0, 2, 1)
  votes = result.votes.transpose(0, 2, 1)
  if chunk.direction == "crossline":                                    # to (n_il, k, n_samples)
    values, votes = values.transpose(1, 0, 2), votes.transpose(1, 0, 2)
  last = chunk.direction == job.directions[-1]
  if len(job.directions) == 2 and last:
    backup = job.backup(chunk)
    if not backup.is_file():                                            # the inline pass's values
      with fileio.atomic_path(backup) as tmp:
        np.save(tmp, job.volume.read_output(job.partial, il_pos, xl_pos))
    values = (np.load(backup) + values) / 2
  if job.write == "mask" and last:
    values = ensemble.is_salt(values).astype(np.float32)
  job.volume.write_output(job.partial, il_pos, xl_pos, values)
  kept = {}
  for position in job.png_positions:
    if chunk.direction == "inline" and chunk.start <= position < chunk.stop:
      kept[f"votes_{position}"] = votes[position - chunk.start]
    elif chunk.direction == "crossline":
      kept[f"votes_{position}"] = votes[position]
  total = float(values.sum(dtype=np.float64)) if last else 0.0
  with fileio.atomic_path(job.marker(chunk)) as tmp:
    np.savez(tmp, sum=total, **kept)
  if len(job.directions) == 2 and last:
    job.backup(chunk).unlink()


def fingerprint(volume, snapshots: infer.Snapshots, options: Dict[str, Any]) -> Dict[str, Any]:
  """What an unfinished output must have been started with to be resumed: the options, the input (path,
  size, modification time) and the snapshots (path, modification time)."""
  stat = volume.path.stat()
  return {"version": STATE_VERSION, "input": str(volume.path.resolve()), "input_bytes": stat.st_size,
          "input_mtime_ns": stat.st_mtime_ns,
          "snapshots": [[str(s.path.resolve()), s.path.stat().st_mtime_ns]
                        for snaps in snapshots for s in snaps],
          **options}


def output_paths(out_dir, volume, write: str, png_inlines: Sequence[int] = ()) -> Dict[str, pathlib.Path]:
  """{"output": <stem>_<write><suffix>, and per inline IL "mask IL" / "overlay IL":
  <stem>_inline<IL>_mask.png / _overlay.png}."""
  out_dir, stem = pathlib.Path(out_dir), volume.path.stem
  paths = {"output": out_dir / f"{stem}_{write}{volume.path.suffix}"}
  for il in png_inlines:
    paths[f"mask {il}"] = out_dir / f"{stem}_inline{il}_mask.png"
    paths[f"overlay {il}"] = out_dir / f"{stem}_inline{il}_overlay.png"
  return paths


def check_volume(volume, il_index: np.ndarray, xl_index: np.ndarray, directions: Sequence[str],
                 png_inlines: Sequence[int]) -> List[int]:
  """The positions in il_index of png_inlines; InputError when a 2-D line is asked for crossline sections
  or a PNG inline is not selected. Notes (one line each) a direction whose sections are smaller than a
  tile: they are reflect-padded to one."""
  if not volume.is_3d and "crossline" in directions:
    raise files.InputError(f"{volume.path}: a 2-D line has one section (its traces); --sections=inline only")
  for direction in directions:
    traces = len(xl_index) if direction == "inline" else len(il_index)
    if min(traces, volume.n_samples) < TILE:
      across = ("crosslines" if direction == "inline" else "inlines") if volume.is_3d else "traces"
      logging.info("%s: its %s sections are %s x %s, smaller than a %d x %d tile; each is reflect-padded to "
                   "a tile, its result keeps its size", volume.path, direction,
                   segy.count(volume.n_samples, "sample"), segy.count(traces, across[:-1]), TILE, TILE)
  selected = {int(volume.ilines[i]): k for k, i in enumerate(il_index)}
  missing = [il for il in png_inlines if il not in selected]
  if missing:
    raise files.InputError(f"{volume.path}: --png_inlines {missing[0]} is not a selected inline "
                           f"({min(selected)}..{max(selected)})")
  return [selected[il] for il in png_inlines]


def _resume_state(state: pathlib.Path, output: pathlib.Path, wanted: Dict[str, Any], overwrite: bool
                  ) -> Optional[Dict[str, Any]]:
  """The recorded options of an unfinished output that these options continue (None: none to continue);
  with `overwrite` an unfinished output is removed; ResumeError when it was started otherwise."""
  if not state.is_dir():
    return None
  recorded_file = state / "options.json"
  recorded = json.loads(recorded_file.read_text()) if recorded_file.is_file() else None
  if overwrite or recorded is None:
    shutil.rmtree(state)
    return None
  for key in sorted(set(wanted) | set(recorded) - {"lo", "hi", "traces_for_range"}):
    if recorded.get(key) != wanted.get(key):
      raise ResumeError(f"--out {output}: an unfinished run started with other options or input is there "
                        f"({key} {json.dumps(recorded.get(key))} then, {json.dumps(wanted.get(key))} now); "
                        "run that command again to finish it, or pass --overwrite to start anew")
  return recorded


class ResumeError(fileio.UnwritableError):
  """An unfinished output in --out that this command would not continue (another command started it)."""


@contextlib.contextmanager
def locked(workdirs: Sequence[str]):
  """Holds the workdirs' locks (their snapshots are read inside)."""
  with contextlib.ExitStack() as stack:
    for wd in workdirs:
      stack.enter_context(rundir.RunDir(wd).lock(jax.process_index()))
    yield


Runner = Callable[[Job, Sequence[Chunk], Callable[[Chunk], None]], Set[str]]


def run_here(loader: infer.SnapshotLoader, snapshots: infer.Snapshots) -> Runner:
  """A runner of chunks in this process, in order: run(job, chunks, done(chunk)) -> {"this process"}."""
  def run(job: Job, chunks: Sequence[Chunk], done: Callable[[Chunk], None]) -> Set[str]:
    for chunk in chunks:
      run_chunk(job, chunk, snapshots, loader)
      done(chunk)
    return {"this process"}
  return run


def segment_volume(volume, workdirs: Sequence[str], out_dir, *, directions: str = "inline",
                   inlines: Optional[Tuple[int, int]] = None, crosslines: Optional[Tuple[int, int]] = None,
                   write: str = "probs", percentiles: Tuple[float, float] = files.DEFAULT_PERCENTILES,
                   png_inlines: Sequence[int] = (), kind: str = "max_map",
                   folds: Optional[Sequence[int]] = None, stride: int = infer.DEFAULT_STRIDE,
                   batch_size: Optional[int] = None, chunk_sections: Optional[int] = None,
                   overwrite: bool = False, runner: Optional[Runner] = None,
                   options: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
  """Segments a volume (or 2-D line) chunk by chunk into an output of its geometry and headers holding the
  probabilities or the mask (1.0 salt, 0.0 not; traces outside the selection 0.0), plus mask and overlay
  PNGs of `png_inlines`; returns the run's record. `runner` runs the chunks (default: here, in order).

  Every flag, workdir, the file and the outputs are checked before anything is computed or written; an
  unfinished output of the same command is continued (module docstring).
  """
  if write not in WRITES or directions not in DIRECTIONS:
    raise errors.BadInput(f"write must be one of {WRITES} and directions one of {tuple(DIRECTIONS)}")
  if chunk_sections is not None and chunk_sections < 1:
    raise errors.BadInput(f"chunk_sections must be a positive number of sections, got {chunk_sections}")
  sections.axis_windows(TILE, stride)
  loader = infer.SnapshotLoader(kind, batch_size, keep=True)
  snapshots = infer.find_snapshots(workdirs, kind, folds)
  il_index, xl_index = segy.select(volume, inlines, crosslines)
  png_positions = check_volume(volume, il_index, xl_index, DIRECTIONS[directions], png_inlines)
  paths = output_paths(out_dir, volume, write, png_inlines)
  for p in paths.values():
    files.check_output(p, overwrite, folder=p.suffix in mdio_volume.SUFFIXES)
  state = paths["output"].parent / f".{paths['output'].name}.partial"
  wanted = fingerprint(volume, snapshots, {
      "directions": directions, "inlines": inlines and list(inlines),
      "crosslines": crosslines and list(crosslines), "write": write, "percentiles": list(percentiles),
      "png_inlines": list(png_inlines), "kind": kind, "folds": folds and sorted(folds), "stride": stride,
      "batch_size": batch_size, "chunk_sections": chunk_sections, **(options or {})})
  recorded = _resume_state(state, paths["output"], wanted, overwrite)
  if recorded is None:
    lo, hi, n_read = volume_range(volume, percentiles)
    state.mkdir(parents=True)
    recorded = {**wanted, "lo": lo, "hi": hi, "traces_for_range": n_read}
  job = Job(volume, il_index, xl_index, DIRECTIONS[directions], write, recorded["lo"], recorded["hi"],
            tuple(workdirs), kind, folds and tuple(sorted(folds)), stride, batch_size, tuple(png_positions),
            state)
  if not (state / "options.json").is_file():
    volume.create_output(job.partial)
    fileio.write_json(state / "options.json", recorded)
  align = {d: (int(il_index[0] if d == "inline" else xl_index[0]), every)
           for d, every in getattr(volume, "write_align", {}).items()}
  chunks = plan_chunks(volume.shape, len(il_index), len(xl_index), job.directions, chunk_sections, align)
  todo = [c for c in chunks if not job.marker(c).is_file()]
  n_sections = sum(c.n_sections for c in chunks)
  t0 = time.perf_counter()
  with locked(workdirs), tqdm.tqdm(total=n_sections, initial=n_sections - sum(c.n_sections for c in todo),
                                   desc=volume.path.name, unit="section", disable=None, leave=False) as bar:
    done = lambda chunk: bar.update(chunk.n_sections)
    run = runner or run_here(loader, snapshots)
    workers: Set[str] = set()
    for direction in job.directions:  # a direction's chunks all end before the next direction's start
      mine = [c for c in todo if c.direction == direction]
      if mine:
        workers |= run(job, mine, done)
  seconds = time.perf_counter() - t0
  total, kept = 0.0, {p: np.zeros((len(xl_index), volume.n_samples), np.float32) for p in png_positions}
  for chunk in chunks:
    with np.load(job.marker(chunk)) as marker:
      total += float(marker["sum"])
      for p in png_positions:
        if f"votes_{p}" in marker.files:
          if chunk.direction == "inline":
            kept[p] += marker[f"votes_{p}"]
          else:
            kept[p][chunk.start:chunk.stop] += marker[f"votes_{p}"]
  for il, p in zip(png_inlines, png_positions):
    section = files.scale_uint8(volume.read_sections("inline", il_index[p:p + 1], xl_index)[0], job.lo,
                                job.hi).T
    mask = ensemble.is_salt(kept[p] / len(job.directions)).T
    for what, image in (("mask", mask.astype(np.uint8) * 255), ("overlay", files.overlay(section, mask))):
      viz.save_png(paths[f"{what} {il}"], image)
  if paths["output"].is_dir():  # an MDIO output replaced with --overwrite
    shutil.rmtree(paths["output"])
  os.replace(job.partial, paths["output"])
  shutil.rmtree(state)
  run_sections = sum(c.n_sections for c in todo)
  record = {"input": str(volume.path), "output": str(paths["output"]), "geometry": volume.geometry,
            "shape": [len(il_index), len(xl_index), volume.n_samples], "sections": n_sections,
            "directions": directions, "write": write, "chunks": len(chunks),
            "chunks_resumed": len(chunks) - len(todo), "workers": len(workers),
            "range": [job.lo, job.hi], "range_traces": recorded["traces_for_range"],
            "seconds": round(seconds, 2), "sections_per_s": round(run_sections / max(seconds, 1e-9), 3),
            "mean": round(total / (len(il_index) * len(xl_index) * volume.n_samples), 4),
            "pngs": [str(paths[k]) for k in paths if k != "output"]}
  logging.info("%s: %d sections (%d run here) of a %s selection in %.1f s (%.2f sections/s) -> %s",
               volume.path, n_sections, run_sections, "x".join(map(str, record["shape"])), seconds,
               record["sections_per_s"], paths["output"])
  return record
