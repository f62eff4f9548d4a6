"""The whole two-stage solution in one command, resumable (SPEC 0, 9; the seed README's pipeline).

    python -m salt_jax.pipeline --config=configs/pipeline_cpu.py --outdir=runs/pipeline

Stage 1: train every listed model on its listed folds (together, in one program: config.folds),
predict, cycle-vote ensemble, jigsaw post-process. Stage 2: train the pseudo-label models (part k
uses test half k and fold `part_folds[k]`) with the stage-1 post-processed submission as labels,
predict, ensemble, post-process -> final submission. Every finished step leaves a marker under
<outdir>/done/, so re-running after a crash continues where it stopped (training itself also resumes
mid-fold). Every step reads the data through one `salt_jax.data.kaggle.DataSource` (config.data_dir and
the decoded-data cache, by default <outdir>/cache), so the PNGs are decoded once. Ends with a table of
every stage's out-of-fold mAP and wall time.
"""
import json
import pathlib
import shutil
import time
from typing import Any, Callable, Dict, List

import ml_collections
import pandas as pd
from absl import flags, logging
from ml_collections import config_flags

from salt_jax import breakdown, cli, configlib, ensemble, fileio, predict, rundir, train
from salt_jax.data import kaggle, sources, submission
from salt_jax.jigsaw import tasks as jigsaw


class Pipeline:
  """Runs named steps once: a step whose marker exists is skipped and its recorded result reused."""

  def __init__(self, outdir):
    self.outdir = pathlib.Path(outdir)
    self.done_dir = self.outdir / "done"
    self.done_dir.mkdir(parents=True, exist_ok=True)
    self.records: List[Dict[str, Any]] = []

  def step(self, name: str, fn: Callable[[], Dict[str, Any]], inputs: Dict[str, Any]) -> Dict[str, Any]:
    """Runs fn once; `inputs` (JSON values: the step's settings and the data fingerprint) are recorded in
    its marker, and a re-run whose inputs differ is refused with the keys that differ (a step that
    changed would make every step after it stale)."""
    marker = self.done_dir / (name.replace("/", "__") + ".json")
    inputs = json.loads(json.dumps(inputs))
    if marker.exists():
      record = json.loads(marker.read_text())
      changed = _changed(record.get("inputs", inputs), inputs)
      if changed:
        raise rundir.WorkdirError(
            f"pipeline step {name} in {self.outdir} ran with other inputs ({changed}); its results and every "
            "later step's would be stale: use another --outdir for the new settings")
      logging.info("[skip] %s (done in %.0f s)", name, record["seconds"])
    else:
      logging.info("[run ] %s", name)
      t0 = time.perf_counter()
      result = fn() or {}
      record = {"step": name, "seconds": time.perf_counter() - t0, "inputs": inputs, "result": result}
      fileio.write_json(marker, record)
    self.records.append(record)
    return record["result"]


def _changed(old: Dict[str, Any], new: Dict[str, Any]) -> str:
  """'key: old -> new; ...' of the inputs that differ ('' if none)."""
  keys = sorted(set(old) | set(new))
  return "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k))


def _train_inputs(config, folds: List[int], data: str) -> Dict[str, Any]:
  """What a training step's results depend on: the data and every key a resume may not change."""
  return dict({k: config[k] for k in sorted(configlib.fixed_keys(config))}, folds=folds, data=data)


def model_config(entry, source: kaggle.DataSource, overrides: Dict[str, Any]) -> ml_collections.ConfigDict:
  """A model entry {name, config (path), overrides} -> its training config, reading `source`."""
  path = pathlib.Path(entry["config"])
  if not path.exists() and not path.is_absolute():
    path = pathlib.Path(__file__).resolve().parents[1] / path  # relative to the repository
  config = configlib.load_config_file(path)
  config.update(dict(overrides))
  config.update(dict(entry.get("overrides", {})))
  config.data_dir, config.cache_dir = source.data_dir, source.cache_dir or ""
  try:
    configlib.validate(config)
  except configlib.ConfigError as e:
    raise configlib.ConfigError(f"pipeline model {entry['name']!r} ({entry['config']}): {e}") from None
  return config


def _oof(table: pd.DataFrame) -> Dict[str, Any]:
  return {"oof": table.to_dict(orient="records"),
          "breakdown": table.attrs["breakdown"].to_dict(orient="records")}


def run_stage(pipe: Pipeline, stage: str, runs: List[Dict[str, Any]], source: kaggle.DataSource,
              mosaics: str, data: str) -> str:
  """Trains, predicts, ensembles and post-processes one stage; returns its post-processed CSV. `data` is
  the source's fingerprint, recorded with each step."""
  sdir = pipe.outdir / stage
  workdirs = []
  for run in runs:
    workdir = sdir / run["name"]
    workdirs.append(str(workdir))
    config = run["config"].copy_and_resolve_references()
    config.folds = ",".join(map(str, run["folds"]))  # the folds train together in one program
    pipe.step(f"{stage}/train/{run['name']}/folds_{config.folds}",
              lambda c=config, w=workdir: _train_summary(train.train_and_evaluate(c, str(w))),
              _train_inputs(config, run["folds"], data))
    pipe.step(f"{stage}/predict/{run['name']}",
              lambda w=workdir: {"snapshots": [{k: m[k] for k in ("fold", "cycle", "val_map", "threshold")}
                                                for m in predict.predict_workdir(w, source=source)]},
              dict(configlib.group_values(config, "eval"), data=data))
  sub = sdir / "ensemble.csv"
  pipe.step(f"{stage}/ensemble", lambda: _oof(ensemble.ensemble(workdirs, str(sub), source,
                                                                save_png=str(sdir / "ensemble.png"),
                                                                report_png=str(sdir / "breakdown.png"))),
            dict(workdirs=workdirs, data=data))
  sub_pp = sdir / "ensemble-vertical-empty-smooth.csv"
  pipe.step(f"{stage}/postprocess", lambda: jigsaw.postprocess(source, str(sub), mosaics, str(sub_pp),
                                                               keep_intermediate=True), dict(data=data))
  return str(sub_pp)


def _train_summary(summaries: Dict[int, Dict[str, Any]]) -> Dict[str, Any]:
  """{fold_<k>: {epochs, best_val_map}} of train_and_evaluate's result."""
  out = {}
  for fold, summary in summaries.items():
    evals = [r for r in summary["history"] if "val_map" in r]
    out[f"fold_{fold}"] = {"epochs": len(summary["history"]),
                           "best_val_map": max((r["val_map"] for r in evals), default=None)}
  return out


def run_pipeline(config: ml_collections.ConfigDict, outdir: str) -> pd.DataFrame:
  """Runs (or continues) both stages; writes <outdir>/submission.csv and returns the summary table."""
  overrides = dict(config.train_overrides)
  source = kaggle.DataSource(config.data_dir, overrides.get("cache_dir") or pathlib.Path(outdir) / "cache")
  # Every model config is built and validated before anything is written.
  stage1 = [dict(name=e["name"], folds=list(config.stage1.folds),
                 config=model_config(e, source, overrides)) for e in config.stage1.models]
  stage2_base = [(e, model_config(e, source, overrides)) for e in config.stage2.models]
  source.train()  # fail early on bad data, before any output
  if stage1[0]["config"].data_source == "tfds":
    sources.load_train(stage1[0]["config"])  # and on the built TFDS dataset that training reads
  data = source.fingerprint()
  pipe = Pipeline(outdir)
  mosaics = pipe.outdir / "mosaics.csv"
  pipe.step("jigsaw/solve", lambda: jigsaw.solve(source, str(mosaics)), dict(data=data))
  pseudo_csv = run_stage(pipe, "stage1", stage1, source, str(mosaics), data)

  stage2 = []
  for e, base in stage2_base:
    for part, fold in enumerate(config.stage2.part_folds):
      c = base.copy_and_resolve_references()
      c.update(pseudo_csv=pseudo_csv, pseudo_split=part, pseudo_prob=config.stage2.pseudo_prob,
               pseudo_split_file=str(pipe.outdir / "pseudo_split.csv"), pseudo_seed=config.stage2.pseudo_seed,
               pseudo_predict_other_half=config.stage2.get("predict_other_half", False))
      stage2.append(dict(name=f"{e['name']}_pseudo_part{part}", folds=[fold], config=c))
  final = run_stage(pipe, "stage2", stage2, source, str(mosaics), data) if stage2 else pseudo_csv
  submission.check_file(final, submission.read_sample_ids(source.data_dir))
  with fileio.atomic_path(pipe.outdir / "submission.csv") as tmp:
    shutil.copyfile(final, tmp)
  table = summary_table(pipe.records)
  submission.write_csv_atomic(table, pipe.outdir / "summary.csv")
  print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
  last = [r for r in pipe.records if r["step"].endswith("/ensemble")][-1]
  if "breakdown" in last["result"]:  # (absent from the markers of older versions)
    print(breakdown.format_summary(pd.DataFrame(last["result"]["breakdown"]),
                                   f"{last['step'].split('/')[0]} out-of-fold ensemble"))
  logging.info("final submission: %s", pipe.outdir / "submission.csv")
  return table


def summary_table(records: List[Dict[str, Any]]) -> pd.DataFrame:
  """One row per stage and model (and ensemble) with the out-of-fold mAP; wall time per stage."""
  rows, seconds = [], {}
  for r in records:
    stage = r["step"].split("/")[0]
    seconds[stage] = seconds.get(stage, 0.0) + r["seconds"]
    if r["step"].endswith("/ensemble"):
      for row in r["result"]["oof"]:
        rows.append({"stage": stage, "model": row["model"], "snapshots": row["snapshots"],
                     "OOF mAP": row["OOF mAP"], "images": row["images"]})
  table = pd.DataFrame(rows)
  table["stage wall s"] = table["stage"].map(seconds)
  return table


FLAGS = flags.FLAGS


def define_flags() -> None:
  """Command-line flags (defined only when run as a program)."""
  config_flags.DEFINE_config_file("config", None, "Pipeline config (configs/pipeline_*.py).",
                                  lock_config=True)
  flags.DEFINE_string("outdir", None, "Output directory of the whole pipeline.")
  flags.mark_flags_as_required(["config", "outdir"])


def main(argv) -> pd.DataFrame:
  del argv
  return run_pipeline(FLAGS.config, FLAGS.outdir)


if __name__ == "__main__":
  cli.run(main, define_flags, prog="salt_jax.pipeline")
