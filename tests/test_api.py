"""The Python API: `import salt_jax` stays light, `__all__` names what docs/api.md documents, and the page's
snippets run (in order, in one namespace, on the tests' tiny trained workdir) and give the masks of
`python -m salt_jax.segment` on the same inputs."""
import os
import pathlib
import re
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

import salt_jax
from salt_jax import cli
from salt_jax.geometry import TILE
from salt_jax.seismic import files, segment
from salt_jax.workdir import checkpoints, rundir

REPO = pathlib.Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "api.md"


def test_import_salt_jax_imports_neither_jax_nor_numpy_and_all_names_resolve():
  code = ("import sys, salt_jax; print(sorted(m for m in sys.modules if m.split('.')[0] in "
          "('jax', 'flax', 'numpy', 'optax')))")
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                        env=dict(os.environ, PYTHONPATH=str(REPO)))
  assert done.stdout.strip() == "[]"
  names = [n for n in salt_jax.__all__ if n != "__version__"]
  assert names == ["load", "Segmenter", "Prediction", "build_model", "load_config", "train_and_evaluate"]
  assert all(f"`{n}`" in PAGE.read_text() for n in names)
  assert salt_jax.Segmenter.__module__ == "salt_jax.seismic.segmenter"
  assert salt_jax.train_and_evaluate.__module__ == "salt_jax.training.train"
  with pytest.raises(AttributeError, match="has no attribute 'lod'"):
    salt_jax.lod  # noqa: B018


def _snippets() -> list:
  return re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S)


def _tile_grid(images: np.ndarray, rows: int, cols: int) -> np.ndarray:
  """(rows*cols,101,101) -> (rows*101, cols*101), row by row."""
  grid = images[:rows * cols].reshape(rows, cols, TILE, TILE).transpose(0, 2, 1, 3)
  return grid.reshape(rows * TILE, cols * TILE)


def _split_threshold(workdir: pathlib.Path, section: np.ndarray) -> None:
  """Sets the workdir's snapshot threshold to the median logit of its probabilities on the section. A
  3-epoch model's probabilities lie within ~0.49-0.50, and at its recorded threshold every pixel is empty;
  split, the masks compared below hold salt and empty pixels."""
  probs = salt_jax.load([str(workdir)]).section(section).probs
  median = float(np.median(probs))
  for _, _, path in rundir.RunDir(workdir).snapshots("max_map"):
    variables, meta = checkpoints.load_snapshot(path)
    checkpoints.save_snapshot(path, variables, dict(meta, val_threshold=float(np.log(median / (1 - median)))))


@pytest.fixture(scope="module")
def page(tiny_run, mini_data_dir, tmp_path_factory):
  """(namespace after the page's snippets, the folder they ran in, (config, workdir, summary)): the page
  runs on a copy of tiny_run's workdir whose threshold splits the section (_split_threshold)."""
  config, trained, summary = tiny_run
  folder = tmp_path_factory.mktemp("api_page")
  workdir = folder / "model_tiny"
  shutil.copytree(trained, workdir)
  trained = folder / "trained_config.py"
  trained.write_text("import ml_collections\n\n\ndef get_config():\n"
                     f"  return ml_collections.ConfigDict({config.to_dict()!r})\n")
  files = sorted((mini_data_dir / "train" / "images").iterdir())[:6]
  tiles = np.stack([cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files])
  grid = _tile_grid(tiles, 2, 3)  # (202, 303) uint8
  noise = np.random.default_rng(0).normal(0, 0.05, grid.shape)
  amplitudes = (grid.astype(np.float32) - 128.0) * 0.01 + noise
  np.save(folder / "section.npy", amplitudes.astype(np.float32)[:190, :280])
  _split_threshold(workdir, np.load(folder / "section.npy"))
  np.save(folder / "volume.npy", np.stack([grid[:120, :110], grid[60:180, 150:260]]))  # uint8 (2, 120, 110)
  replace = {"runs/cpu_small": str(workdir), "configs/cpu_small.py": str(trained),
             "../shared/tgs": str(mini_data_dir)}
  namespace, cwd = {}, os.getcwd()
  os.chdir(folder)
  try:
    for snippet in _snippets():
      for old, new in replace.items():
        snippet = snippet.replace(old, new)
      exec(compile(snippet, str(PAGE), "exec"), namespace)  # noqa: S102
  finally:
    os.chdir(cwd)
  return namespace, folder, (config, workdir, summary)


def _segment(workdir, path: pathlib.Path, out: pathlib.Path):
  """segment's mask (bool) and probabilities (float16) of one input file, as the command writes them."""
  cli.run(segment.main, segment.define_flags, prog="salt_jax.segment",
          argv=[f"--workdirs={workdir}", f"--input={path}", f"--out={out}", "--save_probs"])
  mask = cv2.imread(str(out / f"{path.stem}_mask.png"), cv2.IMREAD_UNCHANGED) == 255
  return mask, np.load(out / f"{path.stem}_probs.npy")


def test_the_page_trains_loads_and_builds(page):
  ns, _, (_, _, summary) = page
  assert len(_snippets()) == 6
  assert ns["summary"][0]["bests"] == summary["bests"]  # the finished fold: its records, no training
  assert [r["epoch"] for r in ns["summary"][0]["history"]] == [r["epoch"] for r in summary["history"]]
  assert isinstance(ns["seg"], salt_jax.Segmenter) and ns["mask"].shape == (190, 280)
  assert ns["mask"].dtype == bool
  assert ns["n_params"] == 30_432_760
  assert ns["pred"].mask.shape == ns["pred"].probs.shape == (16, TILE, TILE) and 0 <= ns["score"] <= 1


def test_the_section_gets_the_masks_of_segment(page, tmp_path):
  ns, folder, (_, workdir, _) = page
  mask, probs = _segment(workdir, folder / "section.npy", tmp_path)
  np.testing.assert_array_equal(ns["out"].mask, mask)
  np.testing.assert_array_equal(ns["out"].probs.astype(np.float16), probs)
  np.testing.assert_array_equal(ns["mask"], mask)  # seg(array) of the first snippet: the same call
  assert 0.3 < mask.mean() < 0.7  # the threshold splits the section (_split_threshold)


def test_the_tiles_get_the_masks_of_segment_on_the_tiles_side_by_side(page, tmp_path):
  ns, _, (_, workdir, _) = page
  tiles, pred = ns["tiles"], ns["pred"]
  np.save(tmp_path / "tiles.npy", np.concatenate(list(tiles), axis=1))  # uint8 (101, 16*101)
  mask, probs = _segment(workdir, tmp_path / "tiles.npy", tmp_path / "out")
  np.testing.assert_array_equal(np.concatenate(list(pred.mask), axis=1), mask)
  np.testing.assert_array_equal(np.concatenate(list(pred.probs), axis=1).astype(np.float16), probs)
  one = ns["seg"].tiles(tiles[3:4])  # a tile alone gets what it gets among others
  np.testing.assert_array_equal(one.mask[0], pred.mask[3])
  np.testing.assert_array_equal(one.probs[0], pred.probs[3])


def test_a_volume_is_its_inline_sections(page):
  ns, folder, _ = page
  volume, vol, seg = np.load(folder / "volume.npy"), ns["vol"], ns["seg"]
  for k in range(volume.shape[0]):
    section = seg.section(volume[k].T)  # (samples, crosslines), depth down
    np.testing.assert_array_equal(vol.mask[k], section.mask.T)
    np.testing.assert_array_equal(vol.probs[k], section.probs.T)


def test_inputs_that_are_not_tiles_sections_or_volumes_are_refused(page):
  seg = page[0]["seg"]
  cases = [(seg.tiles, np.zeros((2, 101, 100), np.uint8), "tiles: shape (2, 101, 100); tiles are (N, 101,"),
           (seg.section, np.zeros((3, 120, 120)), "section: a 3-D array of shape (3, 120, 120); a"),
           (seg.section, np.full((120, 120), np.nan), "section: 14400 NaN or infinite value(s)"),
           (seg.volume, np.zeros((2, 50), np.uint8), "volume: shape (2, 50) and sections='inline'")]
  for call, array, message in cases:
    with pytest.raises(files.InputError) as info:
      call(array)
    assert str(info.value).startswith(message), str(info.value)


def test_sections_smaller_than_a_tile_are_padded_as_segment_pads_them(page):
  """A 60 x 300 section and a volume of 50-sample sections give results of their own shape (segment
  reflect-pads such sections to a tile, issue 40 item 11)."""
  seg = page[0]["seg"]
  assert seg.section(np.zeros((60, 300))).mask.shape == (60, 300)
  result = seg.volume(np.zeros((2, 120, 50), np.uint8))
  assert result.mask.shape == result.probs.shape == (2, 120, 50)


def test_the_readme_picture_script_draws_a_trained_runs_masks(tiny_run, mini_data_dir, tmp_path):
  """scripts/salt_mosaic.py as the README runs it (its own process): a PNG of 16 validation tiles, 8 per row
  of 101 + 2 px cells, and the mAP of the run's vote logged; nothing else is left in the folder."""
  _, workdir, _ = tiny_run
  out = tmp_path / "mosaic.png"
  done = subprocess.run([sys.executable, "scripts/salt_mosaic.py", f"--workdir={workdir}",
                         f"--data_dir={mini_data_dir}", f"--out={out}"], cwd=REPO, capture_output=True,
                        text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert re.search(rf"{re.escape(str(out))}: 16 validation tiles of fold 0, mAP [01]\.\d{{4}}", done.stderr)
  image = cv2.imread(str(out))
  assert image is not None and image.shape[1] > 8 * TILE and image.shape[0] > 2 * TILE
  assert [p.name for p in tmp_path.iterdir()] == ["mosaic.png"]
