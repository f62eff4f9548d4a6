"""The whole two-stage solution in one command, resumable (SPEC 0, 9; the seed README's pipeline).

    python -m salt_jax.pipeline --config=configs/pipeline_cpu.py --outdir=runs/pipeline_cpu

Stage 1: train every listed model on its listed folds (together, in one program: config.folds),
predict, cycle-vote ensemble, jigsaw post-process (config.jigsaw_steps). Stage 2: train the pseudo-label
models, part k on fold `part_folds[k]`, with pseudo labels from the stage-1 submission (the original) or
from that fold's own stage-1 models (stage2.labels='fold'), from random weights or fine-tuning the stage-1
model (stage2.init), or pretrained on every test tile's pseudo label alone and then fine-tuned on the fold's
training tiles without pseudo labels (stage2.init='pretrain', the first place's order); predict, ensemble,
post-process -> final submission. Every finished step leaves a
marker under <outdir>/done/, so re-running after a crash continues where it stopped (training itself also
resumes mid-fold). Every step reads the data through one `salt_jax.data.sources.Source`, the one the
models' configs name (the Kaggle folder config.data_dir with the decoded-data cache, by default
<outdir>/cache, or train_overrides' TFDS build), so the data is decoded once and the steps' records carry
its fingerprint.

Ends with the stage table (<outdir>/stages.csv): per stage, each step's out-of-fold mAP on the trained
folds' validation tiles; the jigsaw rows apply the rules per fold with that fold's labels hidden and the
test tiles predicted by that fold's models only (`held_out`), so no validation label reaches them. Then
every step's wall time (<outdir>/steps.csv).
"""
import json
import pathlib
import shutil
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import ml_collections
import numpy as np
import pandas as pd
from absl import flags, logging
from ml_collections import config_flags

from salt_jax import cli, configlib, fileio, repo
from salt_jax.data import kaggle, sources, submission
from salt_jax.inference import breakdown, ensemble, predict
from salt_jax.jigsaw import rules as jigsaw_rules
from salt_jax.jigsaw import tasks as jigsaw
from salt_jax.training import train
from salt_jax.workdir import rundir

PSEUDO_LABELS = ("ensemble", "fold")
STAGE2_INITS = ("random", "stage1", "pretrain")


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
  """What a training step's results depend on: the data, every key a resume may not change and cycle_num
  (which a restarts run may change on resume: more cycles are more snapshots to predict)."""
  keys = sorted(configlib.fixed_keys(config) | {"cycle_num"})
  return dict({k: config[k] for k in keys}, folds=folds, data=data)


def model_config(entry, folder: kaggle.DataSource, overrides: Dict[str, Any],
                 last_word: Optional[Dict[str, Any]] = None) -> ml_collections.ConfigDict:
  """A model entry {name, config (path), overrides} -> its training config, reading the Kaggle `folder` (or
  the TFDS build that the overrides name): its config file, then `overrides`, then the entry's own, then
  `last_word` (the keys the command line set)."""
  config = configlib.load_config_file(repo.resolve(entry["config"]))
  config.update(dict(overrides))
  config.update(dict(entry.get("overrides", {})))
  config.update(dict(last_word or {}))
  config.data_dir, config.cache_dir = folder.data_dir, folder.cache_dir or ""
  try:
    configlib.validate(config)
  except configlib.ConfigError as e:
    raise configlib.ConfigError(f"pipeline model {entry['name']!r} ({entry['config']}): {e}") from None
  return config


def one_source(configs: Sequence[ml_collections.ConfigDict]) -> sources.Source:
  """The source every model config reads (their source sections agree), which every step then reads;
  ConfigError when two models would read different data."""
  found = {sources.of(configlib.section(c, "source")) for c in configs}
  if len(found) != 1:
    raise configlib.ConfigError(f"pipeline models read different data ({', '.join(sorted(map(str, found)))}); "
                                "set the data keys in train_overrides")
  return found.pop()


def _oof(table: pd.DataFrame) -> Dict[str, Any]:
  return {"oof": table.to_dict(orient="records"),
          "breakdown": table.attrs["breakdown"].to_dict(orient="records")}


def run_stage(pipe: Pipeline, stage: str, runs: List[Dict[str, Any]], source: sources.Source,
              mosaics: str, data: str, steps: Sequence[str]) -> str:
  """Trains, predicts, ensembles and post-processes one stage; returns its post-processed CSV. `data` is
  the source's fingerprint, recorded with each step; `steps` are the jigsaw rule steps applied."""
  sdir = pipe.outdir / stage
  workdirs = []
  for run in runs:
    workdir = sdir / run["name"]
    workdirs.append(str(workdir))
    config = run["config"].copy_and_resolve_references()
    config.folds = ",".join(map(str, run["folds"]))  # the folds train together in one program
    if "pretrain" in run:  # the student's first phase, whose last snapshot config.init_from names
      pre = run["pretrain"]["config"].copy_and_resolve_references()
      pre.folds = config.folds
      pipe.step(f"{stage}/pretrain/{run['pretrain']['name']}/folds_{pre.folds}",
                lambda c=pre, w=sdir / run["pretrain"]["name"]: _train_summary(train.train_and_evaluate(c, str(w))),
                _train_inputs(pre, run["folds"], data))
    pipe.step(f"{stage}/train/{run['name']}/folds_{config.folds}",
              lambda c=config, w=workdir: _train_summary(train.train_and_evaluate(c, str(w))),
              _train_inputs(config, run["folds"], data))
    pipe.step(f"{stage}/predict/{run['name']}",
              lambda w=workdir: {"snapshots": [{k: m[k] for k in ("fold", "cycle", "val_map", "threshold")}
                                                for m in predict.predict_workdir(w, source=source)]},
              dict(configlib.section(config, "eval").items(), data=data))
  sub = sdir / "ensemble.csv"
  pipe.step(f"{stage}/ensemble", lambda: _oof(ensemble.ensemble(workdirs, str(sub), source,
                                                                save_png=str(sdir / "ensemble.png"),
                                                                report_png=str(sdir / "breakdown.png"))),
            dict(workdirs=workdirs, data=data))
  pipe.step(f"{stage}/held_out", lambda: held_out(source, workdirs, mosaics, sdir / "held_out", steps),
            dict(workdirs=workdirs, steps=list(steps), data=data))
  if not steps:
    return str(sub)
  sub_pp = sdir / f"ensemble-{'-'.join(steps)}.csv"
  pipe.step(f"{stage}/postprocess", lambda: jigsaw.postprocess(source, str(sub), mosaics, str(sub_pp), steps=steps,
                                                               keep_intermediate=True),
            dict(steps=list(steps), data=data))
  return str(sub_pp)


def held_out(source: sources.Source, workdirs: Sequence[str], mosaics: str, out_dir: pathlib.Path,
             steps: Sequence[str]) -> Dict[str, Any]:
  """Per fold: the vote of that fold's snapshots (all models) on its validation and the test tiles, then
  the jigsaw rules with the fold's labels hidden (jigsaw.held_out). Writes the fold's post-processed test
  masks (`fold_<k>.csv`, the pseudo labels of stage2.labels='fold'), their confidence
  (`fold_<k>_confidence.csv`, id,confidence) and every fold's rule table with the pooled one (`rules.csv`:
  scripts/jigsaw_rule_effect.py's rows, "cumulative", "alone" and "not applied", fold "all" over all the
  folds' validation tiles) to out_dir; returns the tables."""
  out_dir.mkdir(parents=True, exist_ok=True)
  tables = {}
  for fold, vote in ensemble.fold_votes(workdirs).items():
    table, _, test_pp = jigsaw.held_out(source, mosaics, vote.valid, vote.test, steps=steps)
    submission.write_submission(out_dir / f"fold_{fold}.csv", test_pp)
    submission.write_csv_atomic(pd.DataFrame({"id": vote.test.ids, "confidence": vote.test_confidence}),
                                out_dir / f"fold_{fold}_confidence.csv")
    tables[fold] = table
  pooled = pooled_rule_table(list(tables.values()))
  submission.write_csv_atomic(pd.concat([t.assign(fold=str(k)) for k, t in tables.items()]
                                        + [pooled.assign(fold="all")], ignore_index=True), out_dir / "rules.csv")
  return {"folds": {str(k): t.to_dict(orient="records") for k, t in tables.items()},
          "pooled": pooled.to_dict(orient="records")}


def pooled_rule_table(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
  """The folds' rule tables (effect.rule_effect, same rows) as one over all their tiles: each mAP is a mean
  over tiles, so the pooled one is the tile-weighted mean of the folds'."""
  n = np.array([t["n_tiles"].iloc[0] for t in tables], np.float64)
  out = tables[0][["mode", "step"]].copy()
  out["map"] = sum(t["map"].to_numpy() * k for t, k in zip(tables, n)) / n.sum()
  out["n_changed"] = sum(t["n_changed"].to_numpy() for t in tables)
  out["n_tiles"] = int(n.sum())
  return out


def _train_summary(summaries: Dict[int, Dict[str, Any]]) -> Dict[str, Any]:
  """{fold_<k>: {epochs, best_val_map}} of train_and_evaluate's result."""
  out = {}
  for fold, summary in summaries.items():
    evals = [r for r in summary["history"] if "val_map" in r]
    out[f"fold_{fold}"] = {"epochs": len(summary["history"]),
                           "best_val_map": max((r["val_map"] for r in evals), default=None)}
  return out


def stage2_runs(config, stage2_base, stage1_runs, pipe: Pipeline, pseudo_csv: str) -> List[Dict[str, Any]]:
  """The stage-2 trainings: per model and part k, fold part_folds[k] with pseudo labels (SPEC 9) from the
  stage-1 ensemble (labels='ensemble') or from that fold's stage-1 models only (labels='fold': no label of
  the fold's validation tiles reaches them), test half k or every test tile (halves), optionally at most
  pseudo_tiles of them (the most confident with labels='fold'), from random weights or fine-tuning the
  stage-1 model of the same name on that fold (init='stage1')."""
  s2 = config.stage2
  stage1_dirs = {r["name"]: (pipe.outdir / "stage1" / r["name"], r["config"]) for r in stage1_runs}
  runs = []
  for e, base in stage2_base:
    for part, fold in enumerate(s2.part_folds):
      c = base.copy_and_resolve_references()
      held = pipe.outdir / "stage1" / "held_out"
      c.update(pseudo_csv=pseudo_csv if s2.labels == "ensemble" else str(held / f"fold_{fold}.csv"),
               pseudo_confidence_csv="" if s2.labels == "ensemble" else str(held / f"fold_{fold}_confidence.csv"),
               pseudo_split=part if s2.halves else -1, pseudo_prob=s2.pseudo_prob, pseudo_tiles=s2.pseudo_tiles,
               pseudo_split_file=str(pipe.outdir / "pseudo_split.csv"), pseudo_seed=s2.pseudo_seed,
               pseudo_predict_other_half=s2.predict_other_half)
      name = f"{e['name']}_pseudo_part{part}"
      if s2.init == "stage1":
        workdir, c1 = stage1_dirs[e["name"]]
        c.init_from = str(rundir.RunDir(workdir).snapshot_dir(fold, c1.cycle_num - 1, "max_map"))
      if s2.init == "pretrain":
        runs.append(pretrained_run(c, name, fold, s2, pipe.outdir / "stage2"))
      else:
        runs.append(dict(name=name, folds=[fold], config=c))
  return runs


def pretrained_run(labelled: ml_collections.ConfigDict, name: str, fold: int, s2, sdir: pathlib.Path
                   ) -> Dict[str, Any]:
  """A stage-2 run of stage2.init='pretrain' on `fold`: its first phase (`pretrain`, <name>_pretrain) trains
  from random weights on the pseudo-labelled test tiles alone (every slot of every batch is one of them:
  pseudo_prob 1), with stage2.pretrain_overrides on top of the model's config; the run itself then fine-tunes
  that phase's last max-mAP snapshot on the fold's training tiles, without pseudo labels. labelled: the
  model's config with the fold's pseudo-label keys set."""
  pre = pretrain_config(labelled, s2)
  fine = labelled.copy_and_resolve_references()
  fine.update(pseudo_csv="", pseudo_confidence_csv="", pseudo_tiles=0,
              init_from=str(rundir.RunDir(sdir / f"{name}_pretrain").snapshot_dir(fold, pre.cycle_num - 1,
                                                                                   "max_map")))
  return dict(name=name, folds=[fold], config=fine, pretrain=dict(name=f"{name}_pretrain", config=pre))


def pretrain_config(base: ml_collections.ConfigDict, s2) -> ml_collections.ConfigDict:
  """The first phase's training config of stage2.init='pretrain': `base` with stage2.pretrain_overrides, on
  the pseudo-labelled tiles alone (pseudo_prob 1) from random weights."""
  pre = base.copy_and_resolve_references()
  pre.update(configlib.set_overrides(s2.pretrain_overrides))
  pre.update(pseudo_prob=1.0, init_from="")
  return pre


def check_stage2(config, stage1_runs, stage2_base=()) -> None:
  """ConfigError for stage-2 settings the stage-1 runs cannot serve, or pretraining configs (stage2_base's
  with stage2.pretrain_overrides) that cannot run (before anything is written)."""
  s2 = config.stage2
  for key, value, choices in (("labels", s2.labels, PSEUDO_LABELS), ("init", s2.init, STAGE2_INITS)):
    if value not in choices:
      raise configlib.ConfigError(f"pipeline stage2.{key} must be one of {', '.join(choices)}, got {value!r}")
  if s2.halves and len(s2.part_folds) > 2:
    raise configlib.ConfigError("pipeline stage2.halves pairs part k with test half k: at most 2 part_folds")
  if s2.init == "pretrain" and (s2.labels != "fold" or s2.halves):
    raise configlib.ConfigError("pipeline stage2.init='pretrain' pretrains each fold's student on every test "
                                "tile labelled by that fold's own stage-1 models: it needs labels='fold' and "
                                "halves=False")
  for e, base in stage2_base if s2.init == "pretrain" else ():
    try:
      configlib.validate(pretrain_config(base, s2))
    except configlib.ConfigError as err:
      raise configlib.ConfigError(f"pipeline stage2.pretrain_overrides (model {e['name']!r}): {err}") from None
  if not s2.models:
    return  # stage 2 off: its folds and models need nothing from stage 1
  stage1_folds = set(config.stage1.folds)
  if s2.labels == "fold" or s2.init == "stage1":
    missing = sorted(set(s2.part_folds) - stage1_folds)
    if missing:
      raise configlib.ConfigError(f"pipeline stage2.part_folds {missing} were not trained in stage 1 "
                                  f"(labels={s2.labels!r}, init={s2.init!r} need that fold's stage-1 models)")
  if s2.init == "stage1":
    names = {r["name"] for r in stage1_runs}
    for e in s2.models:
      if e["name"] not in names:
        raise configlib.ConfigError(f"pipeline stage2 model {e['name']!r} has no stage-1 model of that name to "
                                    "fine-tune (init='stage1')")


# Training keys the pipeline sets for every model itself: in train_overrides they would be overwritten.
PIPELINE_SET_KEYS = {"data_dir": "the pipeline's data_dir", "fold": "stage1.folds and stage2.part_folds",
                     "folds": "stage1.folds and stage2.part_folds"}


def model_configs(config: ml_collections.ConfigDict, outdir, given: Sequence[str] = ()
                  ) -> Tuple[List[Dict[str, Any]], List[Tuple[Any, ml_collections.ConfigDict]]]:
  """(stage-1 runs {name, folds, config}, stage-2 (entry, base config) pairs) of a pipeline config
  (with_pipeline_defaults), each training config built and validated (nothing is written).

  A model's training config is its config file, then train_overrides (any key of configlib.KEYS), then in
  stage 2 stage2.overrides, then the model's own overrides, then the train_overrides keys in `given`: the
  ones the command line set (`flag_overrides`), the user's last word.
  """
  overrides = configlib.set_overrides(config.train_overrides)
  for key in sorted(set(overrides) & set(PIPELINE_SET_KEYS)):
    raise configlib.ConfigError(f"pipeline train_overrides.{key}: the pipeline sets it from "
                                f"{PIPELINE_SET_KEYS[key]}")
  last_word = {k: overrides[k] for k in given if k in overrides}
  folder = kaggle.DataSource(config.data_dir, overrides.get("cache_dir") or pathlib.Path(outdir) / "cache")
  stage1 = [dict(name=e["name"], folds=list(config.stage1.folds),
                 config=model_config(e, folder, overrides, last_word)) for e in config.stage1.models]
  stage2 = dict(overrides, **config.stage2.get("overrides", {}))
  stage2_base = [(e, model_config(e, folder, stage2, last_word)) for e in config.stage2.models]
  return stage1, stage2_base


def run_pipeline(config: ml_collections.ConfigDict, outdir: str, given: Sequence[str] = ()) -> pd.DataFrame:
  """Runs (or continues) both stages; writes <outdir>/submission.csv, the stage table (stages.csv) and the
  steps' wall times (steps.csv), and returns the stage table. given: the train_overrides keys the command
  line set (they win over each model's own overrides; model_configs)."""
  config = with_pipeline_defaults(config)
  steps = jigsaw.check_steps(config.jigsaw_steps)
  # Every model config is built and validated before anything is written.
  stage1, stage2_base = model_configs(config, outdir, given)
  check_stage2(config, stage1, stage2_base)
  source = one_source([r["config"] for r in stage1] + [c for _, c in stage2_base])
  source.train()  # fail early on bad data, before any output
  data = source.fingerprint()
  pipe = Pipeline(outdir)
  mosaics = pipe.outdir / "mosaics.csv"
  pipe.step("jigsaw/solve", lambda: jigsaw.solve(source, str(mosaics)), dict(data=data))
  pseudo_csv = run_stage(pipe, "stage1", stage1, source, str(mosaics), data, steps)
  stage2 = stage2_runs(config, stage2_base, stage1, pipe, pseudo_csv)
  final = run_stage(pipe, "stage2", stage2, source, str(mosaics), data, steps) if stage2 else pseudo_csv
  submission.check_file(final, source.test_ids().tolist())
  with fileio.atomic_path(pipe.outdir / "submission.csv") as tmp:
    shutil.copyfile(final, tmp)
  table, times = stage_table(pipe.records), step_times(pipe.records)
  submission.write_csv_atomic(table, pipe.outdir / "stages.csv")
  submission.write_csv_atomic(times, pipe.outdir / "steps.csv")
  print(format_tables(table, times))
  last = [r for r in pipe.records if r["step"].endswith("/ensemble")][-1]
  if "breakdown" in last["result"]:  # (absent from the markers of older versions)
    print(breakdown.format_summary(pd.DataFrame(last["result"]["breakdown"]),
                                   f"{last['step'].split('/')[0]} out-of-fold ensemble"))
  logging.info("final submission: %s", pipe.outdir / "submission.csv")
  return table


STAGE2_DEFAULTS = dict(labels="ensemble", halves=True, init="random", pseudo_tiles=0, pretrain_overrides={})


def with_pipeline_defaults(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The pipeline config with the faithful values of the keys it may omit (jigsaw_steps: every rule;
  stage2: STAGE2_DEFAULTS, the seed README's protocol)."""
  config = ml_collections.ConfigDict(config.to_dict())
  if "jigsaw_steps" not in config:
    config.jigsaw_steps = list(jigsaw_rules.STEPS)
  for key, value in STAGE2_DEFAULTS.items():
    if key not in config.stage2:
      config.stage2[key] = value
  return config


def stage_table(records: List[Dict[str, Any]]) -> pd.DataFrame:
  """The stage table (the seed README's, out of fold). Per stage: each model's mean snapshot mAP and cycle
  vote, the model ensemble, the fold ensemble (not measurable out of fold), each jigsaw rule step applied
  with the fold's labels hidden; after stage 2, the pseudo-labelled stage's total against stage 1 on the
  same folds. 'change' is against the row the step builds on, on the same tiles."""
  rows: List[Dict[str, Any]] = []
  by_step = {r["step"]: r["result"] for r in records}

  def add(stage, step, model, value, tiles, note="", base=None):
    change = value - base["OOF mAP"] if base is not None and base["tiles"] == tiles else np.nan
    rows.append({"stage": stage, "step": step, "model": model, "OOF mAP": value, "change": change,
                 "tiles": tiles, "note": note})
    return rows[-1]

  for stage in dict.fromkeys(r["step"].split("/")[0] for r in records if r["step"].endswith("/ensemble")):
    oof = by_step[f"{stage}/ensemble"]["oof"]
    models = [r for r in oof if r["model"] != "ensemble"]
    held = by_step.get(f"{stage}/held_out", {"folds": {}, "pooled": []})
    votes = []
    for m in models:
      for pretrained in (r["result"] for r in records
                         if r["step"].startswith(f"{stage}/pretrain/{m['model']}_pretrain/")):
        best = [f["best_val_map"] for f in pretrained.values() if f["best_val_map"] is not None]
        add(stage, "pretrained on test pseudo labels only", m["model"], float(np.mean(best)) if best else np.nan,
            m["images"], "its first phase before fine-tuning: best validation mAP (mean over its folds)")
      one = add(stage, "one snapshot (mean of snapshots)", m["model"], m["mean snapshot mAP"], m["images"],
                f"{m['snapshots']} snapshots")
      single = m["snapshots"] == len([k for k in m if k.startswith("fold ")])
      votes.append(add(stage, "cycle vote", m["model"], m["OOF mAP"], m["images"],
                       "one cycle per fold: the vote is the snapshot" if single else "", one))
    ens = [r for r in oof if r["model"] == "ensemble"]
    if ens:
      last = add(stage, "model ensemble", "all", ens[0]["OOF mAP"], ens[0]["images"], "", votes[0])
    else:
      add(stage, "model ensemble", "all", np.nan, votes[0]["tiles"], "one model")
      last = votes[0]
    add(stage, "fold ensemble", "all", np.nan, last["tiles"],
        "not out of fold: each validation tile is held out by one fold, the folds vote only on the test tiles "
        "(two models' vote on the same fold, the row above with two models, is the measurable analogue)")
    for r in held["pooled"]:
      if r["mode"] == "cumulative":
        last = add(stage, f"+ jigsaw {r['step']}", "all", r["map"], r["n_tiles"], f"{r['n_changed']} tiles changed",
                   last)
    for r in held["pooled"]:
      if r["mode"] == "not applied":
        add(stage, f"(jigsaw {r['step']}: not applied)", "all", r["map"], r["n_tiles"],
            f"measured on top of the rows above, {r['n_changed']} tiles changed; off in config.jigsaw_steps", last)
    if stage != "stage1" and held["folds"] and "stage1/held_out" in by_step:
      folds = sorted(held["folds"], key=int)
      before = _final_on(by_step["stage1/held_out"], folds)
      add(stage, "pseudo-labelled stage (total)", "all", last["OOF mAP"], last["tiles"],
          f"against stage 1's final {before['OOF mAP']:.4f} on folds {','.join(folds)}", before)
  return pd.DataFrame(rows, columns=["stage", "step", "model", "OOF mAP", "change", "tiles", "note"])


def _final_on(held: Dict[str, Any], folds: List[str]) -> Dict[str, Any]:
  """{"OOF mAP", "tiles"} of a stage's final out-of-fold masks (after its last jigsaw step) on `folds`."""
  pooled = pooled_rule_table([pd.DataFrame(held["folds"][f]) for f in folds])
  last = pooled[pooled["mode"].isin(["input", "cumulative"])].iloc[-1]
  return {"OOF mAP": float(last["map"]), "tiles": int(last["n_tiles"])}


def step_times(records: List[Dict[str, Any]]) -> pd.DataFrame:
  """Every pipeline step with its wall time (a step skipped on a re-run shows the time it took then)."""
  return pd.DataFrame([{"step": r["step"], "wall s": r["seconds"]} for r in records]
                      + [{"step": "total", "wall s": sum(r["seconds"] for r in records)}])


def format_tables(table: pd.DataFrame, times: pd.DataFrame) -> str:
  """The stage table and the step times as printed at the end of the run."""
  shown = table.copy()
  shown["change"] = shown["change"].map(lambda v: "" if pd.isna(v) else f"{v:+.4f}")
  shown["OOF mAP"] = shown["OOF mAP"].map(lambda v: "n/a" if pd.isna(v) else f"{v:.4f}")
  return (shown.to_string(index=False) + "\n\n"
          + times.to_string(index=False, float_format=lambda v: f"{v:.0f}"))


FLAGS = flags.FLAGS


def define_flags() -> None:
  """Command-line flags (defined only when run as a program)."""
  config_flags.DEFINE_config_file("config", None, "Pipeline config (configs/pipeline_*.py).",
                                  lock_config=True)
  flags.DEFINE_string("outdir", None, "Output directory of the whole pipeline.")
  flags.mark_flags_as_required(["config", "outdir"])


def flag_overrides() -> List[str]:
  """The train_overrides keys the command line set (`--config.train_overrides.<key>=...`)."""
  prefix = "train_overrides."
  return [k[len(prefix):] for k in FLAGS["config"].override_values if k.startswith(prefix)]


def main(argv) -> pd.DataFrame:
  del argv
  return run_pipeline(FLAGS.config, FLAGS.outdir, flag_overrides())


if __name__ == "__main__":
  cli.run(main, define_flags, prog="salt_jax.pipeline")
