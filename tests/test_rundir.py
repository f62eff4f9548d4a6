"""The run directory: layout, config checks before anything is written, resume rules, lock, corrupt checkpoints.

Every refused command is checked for its message and for leaving the workdir byte-for-byte unchanged.
"""
import ast
import errno
import functools
import hashlib
import json
import logging
import math
import os
import pathlib
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from salt_jax import cli, configlib, schedules
from salt_jax.data.errors import DataError
from salt_jax.inference import predict
from salt_jax.training import train
from salt_jax.workdir import checkpoints, rundir
import optim

REPO = pathlib.Path(__file__).resolve().parents[1]


def tree_state(root: pathlib.Path):
  """{relative path: (size, mtime_ns, sha256)} of every file under root (None if root is absent); the lock
  file included: a run refused after taking the lock puts back its bytes and times."""
  if not root.exists():
    return None
  out = {}
  for p in sorted(root.rglob("*")):
    if p.is_file():
      st = p.stat()
      out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
  return out


@pytest.fixture
def run_copy(tiny_run, tmp_path):
  """(config, workdir) of a private copy of the finished tiny run (fold 0, epochs 0-2)."""
  config, workdir, _ = tiny_run
  dst = tmp_path / "copy"
  shutil.copytree(workdir, dst)
  return config, dst


def _final_params(config, workdir):
  run = rundir.RunDir(workdir)
  restored = checkpoints.LatestCheckpoint(run.checkpoints_dir(0))
  abstract = jax.eval_shape(functools.partial(train.steps.create_train_state, train.models.build(**configlib.section(config, "model")),
                                              optim.constant_sgd(config.lr), image_size=config.input_size),
                            jax.random.key(0))
  epoch, state, _ = restored.restore_latest(abstract)
  restored.close()
  return epoch, state.params


# Case 1: a re-run must keep every key that changes the data, the model or the schedule.
@pytest.mark.slow
@pytest.mark.parametrize("key,value,shown", [("num_folds", 5, "num_folds: 4 -> 5"),
                                             ("valid_subset", 5, "valid_subset: 0 -> 5"),
                                             ("lr", 0.02, "lr: 0.01 -> 0.02")])
def test_rerun_with_a_changed_fixed_key_is_refused_and_changes_nothing(run_copy, key, value, shown):
  config, workdir = run_copy
  before = tree_state(workdir)
  with pytest.raises(rundir.WorkdirError, match=f"fold 0 of .* was trained with other settings \\({shown}\\)"):
    train.train_and_evaluate(_with(config, **{key: value}), str(workdir))
  assert tree_state(workdir) == before
  # predict still reads the recorded config and re-derives the recorded threshold.
  meta = predict.predict_workdir(workdir, overwrite=True)[0]
  assert meta["val_map"] == pytest.approx(meta["snapshot_val_map"], abs=1e-6)
  s = configlib.sections(config)
  assert meta["n_valid"] == len(rundir.RunDir(workdir).fold_rows(s.data, 0, *_ids_masks(config), s.optim.seed)[1])


def _with(config, **overrides):
  c = config.copy_and_resolve_references()
  c.update(overrides)
  return c


def _ids_masks(config):
  from salt_jax.data import kaggle
  s = kaggle.load_train(config.data_dir)
  return s.ids, s.masks


@pytest.mark.slow
def test_rerun_may_change_safe_keys_and_records_them(run_copy):
  config, workdir = run_copy
  summary = train.train_and_evaluate(_with(config, eval_batch_size=16, steps_per_call=2), str(workdir))[0]
  assert [r["epoch"] for r in summary["history"]] == [0, 1, 2]  # finished: no epoch trained again
  recorded = json.loads(rundir.RunDir(workdir).config_json(0).read_text())
  assert (recorded["eval_batch_size"], recorded["steps_per_call"]) == (16, 2)


@pytest.mark.slow
def test_a_restarts_run_resumes_with_more_cycles_and_refuses_fewer(run_copy):
  """README: a `restarts` run may resume with more cycles (refused before: "cycle_num: 1 -> 2"). The finished
  fold (1 warm-up epoch, one 2-epoch cycle) trains a second cycle at SPEC 5's rates, keeps its snapshot and
  records cycle_num=2; then fewer cycles than it has trained into are refused and change nothing."""
  config, workdir = run_copy
  assert config.lr_schedule == "restarts" and (config.warmup_epochs, config.cycle_len) == (1, 2)
  history = train.train_and_evaluate(_with(config, cycle_num=2), str(workdir))[0]["history"]
  assert [(r["epoch"], r["cycle"]) for r in history] == [(0, None), (1, 0), (2, 0), (3, 1), (4, 1)]
  want = [float(np.float32(schedules.lr_at_epoch(e, lr=config.lr, eta_min=config.eta_min, warmup_epochs=1,
                                                 cycle_len=2))) for e in range(5)]
  np.testing.assert_allclose([r["lr"] for r in history], want, rtol=1e-12)  # the restart at epoch 3
  run = rundir.RunDir(workdir)
  assert [(fold, cycle) for fold, cycle, _ in run.snapshots()] == [(0, 0), (0, 1)]
  assert json.loads(run.config_json(0).read_text())["cycle_num"] == 2 and run.trained_epochs(0) == 5
  before = tree_state(workdir)
  with pytest.raises(rundir.WorkdirError, match=r"fold 0 of .* has trained 5 epochs, into Lovasz cycle 2; "
                     r"cycle_num=1 would end before that: resume it with cycle_num >= 2"):
    train.train_and_evaluate(config, str(workdir))
  assert tree_state(workdir) == before


def _recorded(tmp_path, config, epochs=(), checkpoint_epochs=()):
  """A workdir whose fold 0 recorded `config` and finished `epochs` (history) and states (checkpoint folders)."""
  run = rundir.RunDir(tmp_path / "w")
  run.record_run(config)
  run.history_jsonl(0).write_text("".join(json.dumps({"epoch": e}) + "\n" for e in epochs))
  for e in checkpoint_epochs:
    (run.checkpoints_dir(0) / str(e)).mkdir(parents=True)
  return run


def test_cycle_num_may_change_only_for_restarts_and_never_below_the_trained_cycles(tmp_path, tiny_config):
  """The rule as RunDir.check_run applies it: a restarts fold of 1 + 3x2 epochs that trained epochs 0-4 (into
  its second cycle) resumes with 2 or more cycles, not 1; a whole-run schedule keeps cycle_num."""
  config = tiny_config(cycle_num=3)
  run = _recorded(tmp_path / "restarts", config, epochs=range(5))
  before = tree_state(run.root)
  assert run.trained_epochs(0) == 5
  for cycles in (2, 3, 7):
    run.check_run(_with(config, cycle_num=cycles))
  with pytest.raises(rundir.WorkdirError, match="has trained 5 epochs, into Lovasz cycle 2; cycle_num=1 would "
                     "end before that: resume it with cycle_num >= 2"):
    run.check_run(_with(config, cycle_num=1))
  assert tree_state(run.root) == before
  # A state the history does not show yet (saved, then killed before the history was written) counts too.
  run = _recorded(tmp_path / "ahead", config, epochs=range(3), checkpoint_epochs=(2, 3))
  assert run.trained_epochs(0) == 4
  run.check_run(_with(config, cycle_num=2))
  with pytest.raises(rundir.WorkdirError, match="has trained 4 epochs, into Lovasz cycle 2"):
    run.check_run(_with(config, cycle_num=1))
  whole_run = tiny_config(cycle_num=3, lr_schedule="warmup_cosine")
  run = _recorded(tmp_path / "cosine", whole_run, epochs=range(2))
  for cycles in (2, 4):
    with pytest.raises(rundir.WorkdirError, match=f"trained with other settings \\(cycle_num: 3 -> {cycles}\\)"):
      run.check_run(_with(whole_run, cycle_num=cycles))
  run.check_run(_with(whole_run, eval_batch_size=16))


def test_a_prediction_is_current_until_its_snapshot_is_rewritten(tmp_path):
  """The one rule (RunDir.current_prediction) that predict (skip a finished snapshot) and segment (take
  predict's threshold) follow: a prediction file not older than its snapshot."""
  from salt_jax.inference import ensemble
  from salt_jax.seismic import infer
  run = rundir.RunDir(tmp_path)
  snap, pred = run.snapshot_dir(0, 1, "max_map"), run.prediction_file("max_map", 0, 1)
  assert run.current_prediction("max_map", 0, 1) is None
  snap.mkdir(parents=True)
  masks = np.zeros((1, 101, 101), np.uint8)
  predict.save_prediction(pred, meta={"threshold": 0.25, "gate": {}}, valid_ids=["a"], valid_masks=masks,
                          test_ids=["b"], test_masks=masks)
  snapshot = ensemble.Voter(str(tmp_path), 0, 1, snap)
  os.utime(snap, (1000, 1000))
  os.utime(pred, (1000, 1000))
  assert run.current_prediction("max_map", 0, 1) == pred  # as old as the snapshot: current
  assert infer.snapshot_threshold(snapshot, "max_map", {"val_threshold": -0.5}) == (0.25, str(pred))
  os.utime(snap, (2000, 2000))  # the snapshot rewritten after predict ran
  assert run.current_prediction("max_map", 0, 1) is None
  assert infer.snapshot_threshold(snapshot, "max_map", {"val_threshold": -0.5}) == (-0.5, str(snap))
  assert run.current_prediction("min_loss", 0, 1) is None


def test_every_config_key_is_either_fixed_or_safe_on_resume():
  keys = set(configlib.base_config().keys())
  assert keys == configlib.RESUME_FIXED_KEYS | configlib.RESUME_SAFE_KEYS
  assert not configlib.RESUME_FIXED_KEYS & configlib.RESUME_SAFE_KEYS


def test_unset_model_options_compare_as_the_variants_defaults():
  config = configlib.load_config_file(REPO / "configs" / "model_101A.py")
  recorded = json.loads(config.to_json_best_effort())
  recorded["head_dropout"] = 0.5  # written out explicitly by an older version: same model
  assert configlib.resume_conflicts(recorded, config) == []
  assert configlib.resume_conflicts(recorded, _with(config, head_dropout=0.0)) == [("head_dropout", 0.5, 0.0)]


def test_a_fold_config_recorded_without_newer_keys_reads_their_defaults(tmp_path):
  """A config.json of an older version (no input_size, no ema_decay) reads as trained: the original's
  128 px canvas and the keys' defaults; recorded values stay."""
  config = configlib.load_config_file(REPO / "configs" / "cpu_small.py")
  record = json.loads(config.to_json_best_effort())
  del record["input_size"], record["ema_decay"]
  run = rundir.RunDir(tmp_path)
  run.config_json(0).parent.mkdir(parents=True)
  run.config_json(0).write_text(json.dumps(record))
  recorded = run.fold_config(0)
  assert set(recorded.keys()) == set(configlib.KEYS)
  assert recorded.input_size == 128 and recorded.ema_decay == configlib.KEYS["ema_decay"].default
  assert recorded.model == config.model and recorded.lr == config.lr


# Case 2: the model name is checked before anything is written; run.json lost is not a blank slate.
def test_unknown_model_is_refused_before_anything_is_written(tmp_path, tiny_config):
  workdir = tmp_path / "new"
  with pytest.raises(configlib.ConfigError, match="config.model 'model_nope' is not a registered model"):
    train.train_and_evaluate(tiny_config(model="model_nope"), str(workdir))
  assert not workdir.exists()


@pytest.mark.slow
def test_missing_run_json_still_protects_the_workdir(run_copy, tiny_config):
  config, workdir = run_copy
  (workdir / "run.json").unlink()
  before = tree_state(workdir)
  with pytest.raises(rundir.WorkdirError, match="holds checkpoints of model 'model_tiny', not 'model_34'"):
    train.train_and_evaluate(_with(config, model="model_34"), str(workdir))
  assert tree_state(workdir) == before
  assert rundir.RunDir(workdir).recorded_model() == "model_tiny"


# Case 3: one run per workdir.
def test_second_run_on_a_locked_workdir_names_the_holder(tmp_path, tiny_config):
  run = rundir.RunDir(tmp_path / "w")
  with run.lock():
    before = tree_state(run.root)
    with pytest.raises(rundir.WorkdirError, match=rf"workdir .* is in use by pid {os.getpid()} on "):
      train.train_and_evaluate(tiny_config(), str(run.root))
    with pytest.raises(rundir.WorkdirError, match="is in use by pid"):
      with rundir.RunDir(run.root).lock():
        pass
    assert tree_state(run.root) == before
  with run.lock():  # released on exit
    pass


def test_cli_on_a_locked_workdir_exits_with_one_line(tmp_path, tiny_config):
  run = rundir.RunDir(tmp_path / "w")
  config = tiny_config()
  with run.lock():
    done = subprocess.run([sys.executable, "-m", "salt_jax.train", "--config=configs/tiny.py",
                           f"--workdir={run.root}", f"--config.data_dir={config.data_dir}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert done.returncode != 0
  assert "Traceback" not in done.stderr
  last = done.stderr.strip().splitlines()[-1]
  assert last.startswith("salt_jax.train: workdir ") and f"is in use by pid {os.getpid()}" in last


# Case 6: a corrupt latest checkpoint falls back to the previous one.
@pytest.mark.slow
def test_corrupt_latest_checkpoint_falls_back_and_ends_identical(run_copy, tiny_run, caplog):
  config, workdir = run_copy
  run = rundir.RunDir(workdir)
  assert sorted(int(p.name) for p in run.checkpoints_dir(0).iterdir() if p.name.isdigit()) == [1, 2]
  (run.checkpoints_dir(0) / "2" / "loop" / "metadata").write_text("{not json")
  summary = train.train_and_evaluate(config, str(workdir))[0]
  warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
  assert any(f"checkpoint {run.checkpoints_dir(0).absolute() / '2'} is unreadable (JSONDecodeError" in w
             and "\n" not in w for w in warnings), warnings
  assert (run.corrupt_checkpoints_dir(0) / "2").is_dir()
  assert [r["epoch"] for r in summary["history"]] == [0, 1, 2]
  epoch_a, params_a = _final_params(config, tiny_run[1])
  epoch_b, params_b = _final_params(config, workdir)
  assert epoch_a == epoch_b == 2
  for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_no_readable_checkpoint_is_one_line_error_and_changes_nothing(run_copy):
  config, workdir = run_copy
  run = rundir.RunDir(workdir)
  for epoch in ("1", "2"):
    for f in (run.checkpoints_dir(0) / epoch / "state").rglob("*"):
      if f.is_file() and f.parent.name == "d":
        f.write_bytes(f.read_bytes()[:8])
  before = tree_state(workdir)
  with pytest.raises(rundir.WorkdirError) as err:
    train.train_and_evaluate(config, str(workdir))
  msg = str(err.value)
  assert msg.startswith("no readable checkpoint to resume from: checkpoint ") and "\n" not in msg
  assert str(run.checkpoints_dir(0).absolute() / "2") in msg and str(run.checkpoints_dir(0).absolute() / "1") in msg
  assert "start this fold again from scratch" in msg
  assert tree_state(workdir) == before


@pytest.mark.slow
def test_a_damaged_history_is_one_line_and_changes_nothing(run_copy):
  """A history.jsonl that is not JSON lines stops the resume with a WorkdirError naming it (before: a
  JSONDecodeError traceback); the workdir stays byte for byte as it was."""
  config, workdir = run_copy
  history = rundir.RunDir(workdir).history_jsonl(0)
  history.write_text("{not json\n")
  before = tree_state(workdir)
  with pytest.raises(rundir.WorkdirError, match=re.escape(f"cannot read {history} (JSONDecodeError: ")):
    train.train_and_evaluate(config, str(workdir))
  assert tree_state(workdir) == before


def _run_program(tmp_path, program: str, fault: str) -> subprocess.CompletedProcess:
  """A helper program of tests/ (e.g. checkpoint_faults.py) run as a command, writing under tmp_path."""
  return subprocess.run([sys.executable, str(REPO / "tests" / program)], cwd=REPO, capture_output=True,
                        text=True, timeout=600,
                        env=dict(os.environ, JAX_PLATFORMS="cpu", FAULT=fault, ROOT=str(tmp_path)))


def test_only_orphaned_tensorstore_reads_are_dropped_from_the_asyncio_log():
  """The asyncio filter drops "Task (or Future) exception was never retrieved" for a tensorstore error (a read
  or write that failed after orbax stopped awaiting it) and keeps the same message for any other error (a
  dask task's, a bug) and every other asyncio record."""
  def record(msg, error):
    exc_info = (type(error), error, None) if error is not None else None
    return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, msg, None, exc_info)

  never = "Task exception was never retrieved\nfuture: <Task finished name='Task-9' coro=<_wrap_awaitable()>"
  read = ValueError('OUT_OF_RANGE: Error reading "a118/0" in OCDBT database at local file "/x/state/": '
                    "Requested byte range [5023932, 5082345) is not valid for value of size 3244032")
  keep = checkpoints._DropOrphanedReads()
  assert not keep.filter(record(never, read))
  assert not keep.filter(record(never, ValueError("DATA_LOSS: Error reading local file")))
  assert keep.filter(record(never, ValueError("could not convert string to float: 'x'")))
  assert keep.filter(record(never, KeyError("OUT_OF_RANGE")))
  assert keep.filter(record(never, None))
  assert keep.filter(record("Unclosed client session", read))
  future = "Future exception was never retrieved\nfuture: <Future finished exception=ValueError('NOT_FOUND: ...')>"
  write = ValueError('NOT_FOUND: Error writing "a193/0" in OCDBT database at local file "/x/state/": Error '
                     'reading Byte range [58441, 58860) of local file "/x/state/d/6c00"')
  assert not keep.filter(record(future, write))
  assert keep.filter(record(future, ValueError("could not convert string to float: 'x'")))
  assert keep.filter(record("A Task exception was never retrieved", read))
  checkpoints._drop_late_callbacks()
  checkpoints._drop_late_callbacks()
  assert sum(isinstance(f, checkpoints._DropOrphanedReads) for f in logging.getLogger("asyncio").filters) == 1


def test_a_damaged_state_or_snapshot_prints_a_few_lines_not_the_reads_tracebacks(tmp_path):
  """States of 200 arrays (a training state has hundreds), the largest data file cut in half: resuming sets
  the latest state aside in three warning lines (what, where to, from which epoch) and a damaged snapshot
  is one refusal line, nothing else. Before, each read still in flight when the first failed printed a
  traceback ('Event loop is closed', or asyncio's 'Task exception was never retrieved' when the loop was
  still open; hundreds, during the run and at exit)."""
  done = _run_program(tmp_path, "checkpoint_faults.py", "damaged")
  assert done.returncode == 1 and done.stdout == "resumed after epoch 0\n", done.stderr[-3000:]
  # orbax's note on a slow save (a loaded machine) is the one other line a save may print
  lines = [line for line in done.stderr.splitlines() if "Waiting for previous save to complete" not in line]
  assert len(lines) == 4, done.stderr[-3000:]
  damaged = tmp_path / "checkpoints" / "1"
  assert f"checkpoint {damaged} is unreadable (" in lines[0]
  assert lines[1].endswith(f"moved the unreadable checkpoint to {tmp_path / 'checkpoints_corrupt' / '1'}")
  assert lines[2].endswith("resuming from the previous checkpoint, epoch 0")
  assert lines[3].startswith(f"checkpoint_faults damaged: cannot read snapshot {tmp_path / 'snapshot'} (")


def _no_space_in(path: pathlib.Path, monkeypatch) -> None:
  """os.write and os.pwrite of the file `path` raise ENOSPC, as on a full disk (other files are written)."""
  for name in ("write", "pwrite"):
    real = getattr(os, name)

    def full(fd, data, *rest, real=real):
      if path.exists() and os.path.samestat(os.fstat(fd), os.stat(path)):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
      return real(fd, data, *rest)

    monkeypatch.setattr(os, name, full)


def test_predict_on_a_full_disk_names_the_lock_it_cannot_write_and_leaves_it(run_copy, monkeypatch, capsys):
  """The workdir's lock file cannot take the new holder's name (a full disk): predict stops with one line
  naming the lock and the errno, and the lock keeps the last holder's name (before: the errno alone, and
  an emptied lock)."""
  _, workdir = run_copy
  run = rundir.RunDir(workdir)
  before = tree_state(workdir)
  _no_space_in(run.lock_file, monkeypatch)
  with pytest.raises(SystemExit) as info:
    cli.run(predict.main, predict.define_flags, prog="salt_jax.predict", argv=[f"--workdir={workdir}"])
  assert info.value.code == 1
  assert capsys.readouterr().err == (f"salt_jax.predict: cannot write {run.lock_file} ([Errno 28] No space "
                                     "left on device)\n")
  assert tree_state(workdir) == before


def test_a_refused_start_leaves_the_lock_of_an_existing_workdir_untouched(run_copy, tmp_path):
  """A trained workdir resumed from a TFDS build that is missing (refused while the data is read, under
  the lock): the lock file keeps its bytes and times, naming the run that trained it."""
  config, workdir = run_copy
  before = tree_state(workdir)
  nowhere = tmp_path / "nowhere"
  with pytest.raises(DataError, match=f"no tgs_salt dataset at {nowhere}"):
    train.train_and_evaluate(_with(config, data_source="tfds", tfds_data_dir=str(nowhere)), str(workdir))
  assert tree_state(workdir) == before


# Case 7: values that cannot run are refused up front.
@pytest.mark.parametrize("overrides,message", [
    (dict(batch_size=0), "config.batch_size must be > 0, got 0"),
    (dict(eval_every=0), "config.eval_every must be > 0, got 0"),
    (dict(lr=math.nan), "config.lr must be a finite number >= 0, got nan"),
    (dict(weight_decay=-1.0), "config.weight_decay must be a finite number >= 0"),
    (dict(dtype="float16"), "config.dtype must be one of"),
    (dict(model="model_101A", input_size=112), "config.input_size=112 does not fit model_101A"),
    (dict(ema_decay=1.0), r"config.ema_decay must be in \[0, 1\)"),
    (dict(gate_min_areas="10,x"), "config.gate_min_areas must be a comma list of numbers"),
    (dict(lr_schedule="warmup_cosine", lr_warmup_epochs=3.0),
     "lr_warmup_epochs=3.0 must be shorter than the run"),
    (dict(fold=4), r"config.fold=4 is outside 0..3"),
    (dict(cycle_len=3, eval_start=5), "no validation epoch in a cycle"),
    (dict(pseudo_prob=1.5), r"config.pseudo_prob must be in \[0, 1\]"),
    (dict(keep_checkpoints=1), "config.keep_checkpoints must be >= 2"),
    (dict(cpu_ynn_fusion="dot,conv"), "config.cpu_ynn_fusion must be '', 'none' or a comma list of dot, eltwise, "
     "reduce, individual_convolution, individual_dot, got 'dot,conv'"),
    (dict(batch_sise=8), "unknown config key 'batch_sise'; closest known keys: batch_size"),
    (dict(init_from="/nonexistent/model.pth"), "config.init_from: file /nonexistent/model.pth does not exist"),
])
def test_bad_values_are_refused_before_anything_is_written(tmp_path, tiny_config, overrides, message):
  workdir = tmp_path / "w"
  with pytest.raises(configlib.ConfigError, match=message):
    train.train_and_evaluate(tiny_config(**overrides), str(workdir))
  assert not workdir.exists()


def test_unknown_flag_key_names_the_closest_keys(tmp_path):
  done = subprocess.run([sys.executable, "-m", "salt_jax.train", "--config=configs/tiny.py",
                         f"--workdir={tmp_path / 'w'}", "--config.eval_evry=3"],
                        cwd=REPO, capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert done.returncode != 0 and "Traceback" not in done.stderr
  assert "unknown config key 'eval_evry'; closest known keys: eval_every" in done.stderr
  assert not (tmp_path / "w").exists()


# Case 8: a start refused while the data is read (under the lock) leaves the workdir as it was.
def _refused_data(tmp_path, mini_data_dir, what: str):
  """(config overrides, part of the refusal) of a data source that cannot be read."""
  if what == "tfds build":
    nowhere = tmp_path / "nowhere"
    return dict(data_source="tfds", tfds_data_dir=str(nowhere)), f"no tgs_salt dataset at {nowhere}/tgs_salt"
  if what == "data folder":
    return dict(data_dir=str(tmp_path / "no_data")), f"missing folder: {tmp_path / 'no_data'}"
  first = (mini_data_dir / "sample_submission.csv").read_text().splitlines()[1].split(",")[0]
  short = tmp_path / "short_pseudo.csv"
  short.write_text(f"id,rle_mask\n{first},1 3\n")   # one test tile of 24: the chosen half lacks masks
  return dict(pseudo_csv=str(short), pseudo_prob=0.5), f"{short} has no mask for "


@pytest.mark.parametrize("what", ["tfds build", "data folder", "pseudo csv"])
def test_a_start_refused_while_reading_the_data_leaves_no_workdir(tmp_path, tiny_config, mini_data_dir, what):
  overrides, message = _refused_data(tmp_path, mini_data_dir, what)
  config = tiny_config(**overrides)
  new = tmp_path / "runs" / "new"
  with pytest.raises(DataError, match=re.escape(message)):
    train.train_and_evaluate(config, str(new))
  assert not (tmp_path / "runs").exists()   # neither the workdir nor the folder made for it
  existing = tmp_path / "existing"          # recorded by an earlier start, without a lock file
  rundir.RunDir(existing).record_run(config)
  before = tree_state(existing)
  with pytest.raises(DataError, match=re.escape(message)):
    train.train_and_evaluate(config, str(existing))
  assert tree_state(existing) == before     # no lock file and no pseudo_split.csv left behind


def test_cli_refusing_a_missing_tfds_build_leaves_no_workdir(tmp_path):
  nowhere, workdir = tmp_path / "nowhere", tmp_path / "runs" / "new"
  done = subprocess.run([sys.executable, "-m", "salt_jax.train", "--config=configs/tiny.py",
                         f"--workdir={workdir}", "--config.data_source=tfds",
                         f"--config.tfds_data_dir={nowhere}"],
                        cwd=REPO, capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert done.returncode == 1 and "Traceback" not in done.stderr
  assert done.stderr.strip().splitlines()[-1].startswith(
      f"salt_jax.train: no tgs_salt dataset at {nowhere}/tgs_salt/1.0.0 (config.tfds_data_dir={nowhere}); ")
  assert not (tmp_path / "runs").exists()


def test_a_lock_file_removed_before_it_was_locked_is_made_again(tmp_path, monkeypatch):
  """A refused start removes the lock file and workdir it created; a run that opened that file in
  between locks a new one at the path, not the removed one, so two runs never hold the workdir."""
  run = rundir.RunDir(tmp_path / "w")
  flock, calls = rundir.fcntl.flock, []

  def removed_first(fd, operation):
    calls.append(operation)
    if len(calls) == 1:             # the refused holder cleans up after this run opened the file
      run.lock_file.unlink()
      run.root.rmdir()
    flock(fd, operation)

  monkeypatch.setattr(rundir.fcntl, "flock", removed_first)
  with run.lock():
    assert len(calls) == 2 and f"pid {os.getpid()} " in run.lock_file.read_text()
    with pytest.raises(rundir.WorkdirError, match="is in use by pid"):
      with rundir.RunDir(run.root).lock():
        pass
  assert run.lock_file.is_file()    # kept after a run that ended normally: it names the last holder


# Structure: one owner of the workdir; inference does not import training.
def _imports(path: pathlib.Path):
  tree = ast.parse(path.read_text())
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module:
      yield from (f"{node.module}.{a.name}" for a in node.names)
    elif isinstance(node, ast.Import):
      yield from (a.name for a in node.names)


def test_only_the_pipeline_and_the_command_import_the_training_program():
  program = "salt_jax.training.train"
  importers = sorted(str(p.relative_to(REPO / "salt_jax")) for p in (REPO / "salt_jax").rglob("*.py")
                     if any(i == program or i.startswith(program + ".") for i in _imports(p)))
  assert importers == ["pipeline.py", "train.py"]


def test_run_dir_layout():
  run = rundir.RunDir("/w")
  assert str(run.snapshot_dir(3, 1, "max_map")) == "/w/fold_3/snapshots/cycle_1_max_map"
  assert str(run.prediction_file("min_loss", 2, 0)) == "/w/predictions/min_loss/fold_2_cycle_0.npz"
  assert str(run.checkpoints_dir(0)) == "/w/fold_0/checkpoints"
  with pytest.raises(ValueError, match="snapshot kind must be one of"):
    run.snapshot_dir(0, 0, "best")


def _weight_files(tmp_path):
  """Bad weight files: empty, random bytes, a state dict of other tensors, one with a wrong shape."""
  torch = pytest.importorskip("torch")
  empty = tmp_path / "empty.pth"
  empty.write_bytes(b"")
  noise = tmp_path / "noise.pth"
  noise.write_bytes(np.random.default_rng(0).bytes(4096))
  other = tmp_path / "other.pth"
  torch.save({"conv.weight": torch.zeros(3, 3)}, other)
  return {"empty": empty, "noise": noise, "other": other}


@pytest.mark.torch
@pytest.mark.parametrize("name,key,model,shown", [
    ("empty", "init_from", "model_34", "EOFError"), ("noise", "init_from", "model_34", "UnpicklingError"),
    ("other", "init_from", "model_34", "missing Flax variables"),
    ("other", "init_from", "model_tiny", "'model_tiny' has no original torch model"),
    ("other", "pretrained", "model_34", "missing Flax variables"),
    ("empty", "pretrained", "model_34", "EOFError")])
def test_bad_weight_files_are_one_line_before_anything_is_written(tmp_path, tiny_config, name, key, model,
                                                                  shown):
  path = _weight_files(tmp_path)[name]
  workdir = tmp_path / "wd"
  with pytest.raises(configlib.ConfigError) as info:
    train.train_and_evaluate(tiny_config(model=model, **{key: str(path)}), str(workdir))
  message = str(info.value)
  assert message.startswith(f"config.{key}: cannot use {path} as {model} weights") and shown in message
  assert "\n" not in message and len(message) < 500
  assert not workdir.exists()


@pytest.mark.torch
def test_predict_of_a_bad_original_checkpoint_writes_nothing(tmp_path, tiny_config):
  """predict --config.init_from records the run only after the weights loaded: a failed try leaves the
  workdir unmade, so the re-run with the right file is not refused."""
  path = _weight_files(tmp_path)["noise"]
  workdir = tmp_path / "wd"
  with pytest.raises(configlib.ConfigError, match="config.init_from: cannot use .*noise.pth as model_34"):
    predict.predict_original(str(workdir), tiny_config(model="model_34", init_from=str(path)))
  assert not workdir.exists()


@pytest.mark.slow
def test_a_full_disk_stops_training_in_one_line_and_the_run_resumes(tiny_run, tmp_path, monkeypatch):
  """A disk with no space left under the workdir: the first end-of-epoch save raises a DiskError naming
  the checkpoints folder and ENOSPC before orbax starts (no state written); with space again, the same
  command resumes and ends where an uninterrupted run ends."""
  config, _, _ = tiny_run
  workdir = tmp_path / "wd"
  real = os.statvfs

  class _Full:
    f_files, f_favail, f_bavail, f_frsize, f_flag = 10**6, 10**6, 0, 4096, 0

  monkeypatch.setattr(os, "statvfs", lambda p: _Full if str(workdir) in str(p) else real(p))
  with pytest.raises(checkpoints.DiskError) as info:
    train.train_and_evaluate(config, str(workdir))
  message = str(info.value)
  assert message.startswith(f"cannot write {rundir.RunDir(workdir).checkpoints_dir(0)}: 0.0 MiB free")
  assert "[Errno 28] No space left on device" in message and "\n" not in message
  assert not [p for p in rundir.RunDir(workdir).checkpoints_dir(0).iterdir() if p.name.isdigit()]
  monkeypatch.undo()
  summary = train.train_and_evaluate(config, str(workdir))[0]
  assert [r["epoch"] for r in summary["history"]] == [0, 1, 2]
  epoch, params = _final_params(config, workdir)
  want_epoch, want = _final_params(config, tiny_run[1])
  assert epoch == want_epoch
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=0)
