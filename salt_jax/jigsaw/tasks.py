"""The jigsaw steps as library functions (SPEC 8): each reads its inputs, writes its outputs atomically and
returns what it did as plain JSON-ready values. `python -m salt_jax.jigsaw` and the pipeline call these.

Each reads the data through the `salt_jax.data.sources.Source` it is handed (the pipeline hands every
step the same one, so the PNGs are decoded once). Inputs are checked before anything is written: a
submission must hold exactly the source's test ids (those of `sample_submission.csv`, each once), otherwise
a `DataError` names the file and a few ids.
"""
from __future__ import annotations

import pathlib
import time
from typing import Any, Dict, List, Optional, Sequence

import pandas as pd

from salt_jax.data import sources
from salt_jax.data import submission as submission_lib
from salt_jax.data.errors import preview
from salt_jax.jigsaw import edges, effect, render as render_lib, rules, solver, tables


def solve(source: sources.Source, out, *, knn: str = "brute", mutual: bool = False,
          check_collisions: bool = False, all_mosaics: bool = False,
          mark_seed: bool = False) -> Dict[str, Any]:
  """Assembles mosaics from all train+test tiles and writes the table `id,mosaic_id,x,y` to `out`.

  The flags are the solver's opt-in repairs (see salt_jax.jigsaw.solver); `all_mosaics` keeps every
  component with >= 2 tiles instead of the hard-coded 514.
  Returns:
    {"stats": {name: int} (solver counts), "seconds": {"load", "solve"}, "out": str}.
  """
  t0 = time.perf_counter()
  tiles = edges.load_tile_set(source)
  t1 = time.perf_counter()
  sol = solver.solve(tiles, knn=knn, mutual=mutual, check_collisions=check_collisions,
                     n_mosaics=None if all_mosaics else solver.N_MOSAICS, mark_seed=mark_seed)
  t2 = time.perf_counter()
  submission_lib.write_csv_atomic(sol.table, out)
  return {"stats": {k: int(v) for k, v in sol.stats.items()}, "seconds": {"load": t1 - t0, "solve": t2 - t1},
          "out": str(out)}


def check_steps(steps: Sequence[str]) -> tuple:
  """The rule steps as a tuple; ValueError naming any step that is not one of rules.STEPS."""
  steps = tuple(steps)
  unknown = [s for s in steps if s not in rules.STEPS]
  if unknown:
    raise ValueError(f"unknown rule step(s) {preview(unknown)}; choose from {', '.join(rules.STEPS)}")
  return steps


def intermediate_path(out, steps: Sequence[str]) -> pathlib.Path:
  """Where the submission after `steps` goes beside `out`: sub_pp.csv -> sub_pp.vertical-empty.csv."""
  out = pathlib.Path(out)
  return out.with_name(f"{out.stem}.{'-'.join(steps)}{out.suffix}")


def postprocess(source: sources.Source, submission, mosaics, out, *, steps: Sequence[str] = rules.STEPS,
                max_mosaic_id: Optional[int] = rules.MAX_MOSAIC_ID,
                keep_intermediate: bool = False) -> Dict[str, Any]:
  """Applies the SPEC 8.3 rules (in `steps` order) to the submission CSV and writes the result to `out`.

  The submission must hold exactly the source's test ids (sample_submission.csv's); every check runs before
  anything is written. The output keeps the submission's row order.
  Args:
    max_mosaic_id: the empty and smooth rules touch mosaics 0..max_mosaic_id only (None: all mosaics).
    keep_intermediate: also write the submission after every step but the last (`intermediate_path`).
  Returns:
    {"steps": {step: {"changed": n tiles, "by_rule": {rule: n tiles}}}, "tiles": n,
     "intermediate": [str paths], "out": str}.
  """
  steps = check_steps(steps)
  sub = submission_lib.read_submission(submission, sample_ids=source.test_ids().tolist())
  mosaic_table = tables.read_mosaics(mosaics)
  train = source.train()
  known = dict(zip(train.ids.tolist(), train.masks))
  res = rules.apply_rules(mosaic_table, known, sub, steps, max_mosaic_id)
  out = pathlib.Path(out)
  written = []
  if keep_intermediate:
    for j in range(len(steps) - 1):
      path = intermediate_path(out, steps[:j + 1])
      submission_lib.write_submission(path, res.stages[steps[j]])
      written.append(str(path))
  submission_lib.write_submission(out, res.stages[steps[-1]] if steps else sub)
  report = {}
  for step in steps:
    counts: Dict[str, int] = {}
    for rule in res.changed[step].values():
      counts[rule] = counts.get(rule, 0) + 1
    report[step] = {"changed": len(res.changed[step]), "by_rule": dict(sorted(counts.items()))}
  return {"steps": report, "tiles": len(sub), "intermediate": written, "out": str(out)}


def held_out(source: sources.Source, mosaics, valid: submission_lib.Submission,
             test: submission_lib.Submission, *, steps: Sequence[str] = rules.STEPS,
             max_mosaic_id: Optional[int] = rules.MAX_MOSAIC_ID):
  """The rules on one fold's out-of-fold predictions, with that fold's labels hidden.

  The fold's validation tiles (`valid`: their predicted masks) and the test tiles (`test`: predicted by
  models that did not see the fold) are the unknown tiles; every other train tile keeps its ground truth.
  Every rule step of rules.STEPS that `steps` leaves out is measured too, as one more step on top of the
  chain (rows of mode "not applied"), so a config that switches a rule off still shows what it would do.
  Returns (the before/after table of effect.rule_effect on the validation tiles, scored against their
  ground truth; the validation masks after the chain; the test masks after the chain).
  """
  steps = check_steps(steps)
  train = source.train()
  hidden = set(valid.ids.tolist())
  known = {i: m for i, m in zip(train.ids.tolist(), train.masks) if i not in hidden}
  truth = {i: m for i, m in zip(train.ids.tolist(), train.masks) if i in hidden}
  table = tables.read_mosaics(mosaics)
  report, chain = effect.chain_effect(table, known, valid, truth, extra_unknown=test, steps=steps,
                                      max_mosaic_id=max_mosaic_id)
  for step in (s for s in rules.STEPS if s not in steps):
    extra = effect.rule_effect(table, known, valid, truth, extra_unknown=test, steps=steps + (step,),
                               max_mosaic_id=max_mosaic_id)
    row = extra[extra["mode"] == "cumulative"].iloc[[-1]].assign(mode="not applied")
    report = pd.concat([report, row], ignore_index=True)
  final = chain.stages[steps[-1]] if steps else chain.stages["input"]
  return report, final.select(list(valid.ids)), final.select(list(test.ids))


def render(source: sources.Source, mosaics, out_dir, *, submission=None, top: int = 3,
           grid: bool = False) -> List[pathlib.Path]:
  """Writes `mosaic_<id>.png` for the `top` largest mosaics (train masks green, the optional submission's
  masks red) and returns the paths."""
  mosaic_table = tables.read_mosaics(mosaics)
  pred = submission_lib.read_submission(submission) if submission else None
  train, test = source.train(), source.test()
  images = dict(zip(train.ids.tolist(), train.images))
  images.update(zip(test.ids.tolist(), test.images))
  known = dict(zip(train.ids.tolist(), train.masks))
  return render_lib.render_top(mosaic_table, images, out_dir, top, known, pred, grid=grid)
