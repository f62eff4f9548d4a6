"""Epoch schedule and optimiser (SPEC 5)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from salt_jax import configlib, schedules

FAITHFUL = dict(lr=0.01, eta_min=0.001, warmup_epochs=10, cycle_len=50)
# SPEC 5 values for t = e + 1 within a cycle, given to 4 significant digits.
SPEC_LR = {1: 0.009991, 2: 0.009965, 10: 0.009141, 20: 0.006891, 25: 0.0055, 30: 0.004109, 35: 0.002855,
           40: 0.001859, 45: 0.001220, 49: 0.001009, 50: 0.001}


def test_lr_matches_spec_values():
  for cycle in range(7):
    for t, expected in SPEC_LR.items():
      epoch = 10 + cycle * 50 + t - 1
      assert schedules.lr_at_epoch(epoch, **FAITHFUL) == pytest.approx(expected, abs=5e-7), (cycle, t)
  assert schedules.lr_at_epoch(10 + 49, **FAITHFUL) == pytest.approx(0.001, abs=1e-12)


def test_lr_warmup_then_restart():
  lrs = [schedules.lr_at_epoch(e, **FAITHFUL) for e in range(schedules.total_epochs(10, 7, 50))]
  assert len(lrs) == 360 and isinstance(lrs[0], float)
  assert lrs[:10] == [0.01] * 10
  assert lrs[10] < 0.01 and lrs[59] == pytest.approx(0.001)
  assert lrs[60] == pytest.approx(lrs[10]) and lrs[60] > lrs[59]
  assert np.all(np.diff(lrs[10:60]) < 0)
  np.testing.assert_allclose(lrs[10:60], lrs[310:360])


def test_cycle_bookkeeping():
  kw = dict(warmup_epochs=10, cycle_len=50)
  assert [schedules.cycle_of_epoch(e, **kw) for e in (0, 9, 10, 59, 60, 359)] == [None, None, 0, 0, 1, 6]
  assert [schedules.epoch_in_cycle(e, **kw) for e in (9, 10, 59, 60, 359)] == [None, 0, 49, 0, 49]
  assert schedules.total_epochs(10, 7, 50) == 360
  assert schedules.cycle_of_epoch(0, 0, 3) == 0


def test_eval_epochs_faithful():
  kw = dict(warmup_epochs=10, cycle_len=50)
  evals = [e for e in range(360) if schedules.is_eval_epoch(e, **kw)]
  assert len(evals) == 49
  for cycle in range(7):
    within = [schedules.epoch_in_cycle(e, **kw) + 1 for e in evals
              if schedules.cycle_of_epoch(e, **kw) == cycle]
    assert within == [20, 25, 30, 35, 40, 45, 50]
  assert not any(schedules.is_eval_epoch(e, **kw) for e in range(10))


def test_eval_epochs_short_cycles():
  kw = dict(warmup_epochs=2, cycle_len=6, eval_start=2, eval_every=2)
  assert [e for e in range(14) if schedules.is_eval_epoch(e, **kw)] == [3, 5, 7, 9, 11, 13]
  kw = dict(warmup_epochs=1, cycle_len=2, eval_start=1, eval_every=1)
  assert [e for e in range(5) if schedules.is_eval_epoch(e, **kw)] == [1, 2, 3, 4]


def _params():
  rng = np.random.default_rng(0)
  return {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
          "b": jnp.asarray(rng.normal(size=(4,)), jnp.float32)}


def _sgd_config(**overrides):
  config = configlib.base_config()
  config.update(overrides)
  return config


def test_optimizer_matches_pytorch_sgd_by_hand():
  lr, m, wd = 0.01, 0.9, 2e-4
  tx = schedules.make_optimizer(_sgd_config(lr=lr, momentum=m, weight_decay=wd), steps_per_epoch=100)
  params = _params()
  state = tx.init(params)
  rng = np.random.default_rng(1)
  grads = [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
           for _ in range(3)]
  w = jax.tree.map(lambda p: np.asarray(p, np.float64), params)
  buf = None
  for g in grads:
    d = jax.tree.map(lambda gi, wi: np.asarray(gi, np.float64) + wd * wi, g, w)
    buf = d if buf is None else jax.tree.map(lambda bi, di: m * bi + di, buf, d)  # first step: buf = g + wd*w
    w = jax.tree.map(lambda wi, bi: wi - lr * bi, w, buf)
    updates, state = tx.update(g, state, params)
    params = jax.tree.map(lambda p, u: p + u, params, updates)
    jax.tree.map(lambda p, e: np.testing.assert_allclose(np.asarray(p), e, rtol=1e-6, atol=1e-7), params, w)


@pytest.mark.torch
def test_optimizer_matches_torch_sgd():
  """torch's SGD with its rate set per step to our schedule's (1 warm-up epoch of 2 steps, then a 3-epoch
  cycle): the same parameters."""
  torch = pytest.importorskip("torch")
  params = _params()
  tw = {k: torch.tensor(np.asarray(v), requires_grad=True) for k, v in params.items()}
  opt = torch.optim.SGD(list(tw.values()), lr=0.01, momentum=0.9, weight_decay=2e-4)
  config = _sgd_config(warmup_epochs=1, cycle_num=1, cycle_len=3)
  tx = schedules.make_optimizer(config, steps_per_epoch=2)
  state = tx.init(params)
  rng = np.random.default_rng(2)
  for step in range(8):
    lr = schedules.lr_at_epoch(min(step // 2, 3), lr=0.01, eta_min=0.001, warmup_epochs=1, cycle_len=3)
    for group in opt.param_groups:
      group["lr"] = lr
    g = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()}
    for k in tw:
      tw[k].grad = torch.from_numpy(g[k])
    opt.step()
    updates, state = tx.update(jax.tree.map(jnp.asarray, g), state, params)
    params = jax.tree.map(lambda p, u: p + u, params, updates)
    assert float(schedules.learning_rate(state)) == pytest.approx(lr, rel=1e-6)
  for k in params:
    np.testing.assert_allclose(np.asarray(params[k]), tw[k].detach().numpy(), rtol=1e-6, atol=1e-7)


def _rates(tx, params, n_steps):
  """The learning rate of each of n_steps updates, from one compiled update."""
  update = jax.jit(tx.update)
  state, rates = tx.init(params), []
  for _ in range(n_steps):
    _, state = update(jax.tree.map(jnp.ones_like, params), state, params)
    rates.append(float(schedules.learning_rate(state)))
  return np.asarray(rates)


@pytest.mark.parametrize("steps_per_epoch", [1, 3])
def test_faithful_schedule_in_the_optimiser_gives_spec_rate_per_epoch(steps_per_epoch):
  """The rate the step reads from the optimiser is, on every step of an epoch, the float32 of lr_at_epoch
  (what the host used to write each epoch), for the warm-up, two cycles and the restart between."""
  kw = dict(lr=0.01, eta_min=0.001, warmup_epochs=2, cycle_len=4)
  config = _sgd_config(cycle_num=2, **kw)
  rates = _rates(schedules.make_optimizer(config, steps_per_epoch), _params(), 10 * steps_per_epoch)
  expected = np.repeat([np.float32(schedules.lr_at_epoch(e, **kw)) for e in range(10)], steps_per_epoch)
  np.testing.assert_array_equal(rates.astype(np.float32), expected)


def test_folds_with_different_epoch_lengths_follow_their_own_epochs():
  """Two optimiser states stacked and vmapped (as fold-parallel training runs them): each fold's rate
  follows its own steps per epoch."""
  config = _sgd_config(warmup_epochs=1, cycle_num=1, cycle_len=3)
  params = _params()
  states = [schedules.make_optimizer(config, n).init(params) for n in (2, 3)]
  tx = schedules.make_optimizer(config, 1)  # the update reads the steps per epoch from the state
  stacked = jax.tree.map(lambda *x: jnp.stack(x), *states)
  grads = jax.tree.map(lambda p: jnp.ones((2,) + p.shape), params)
  both = jax.tree.map(lambda p: jnp.stack([p, p]), params)
  update = jax.jit(jax.vmap(tx.update))
  rates = []
  for _ in range(9):
    _, stacked = update(grads, stacked, both)
    rates.append(np.asarray(schedules.learning_rate(stacked)))
  kw = dict(lr=0.01, eta_min=0.001, warmup_epochs=1, cycle_len=3)
  for fold, n in enumerate((2, 3)):
    expected = [np.float32(schedules.lr_at_epoch(min(s // n, 3), **kw)) for s in range(9)]
    np.testing.assert_array_equal(np.asarray(rates)[:, fold], expected)


@pytest.mark.parametrize("name", ["warmup_cosine", "warmup_linear"])
def test_run_long_schedules_warm_up_and_anneal_every_step(name):
  """1.5 warm-up epochs from 0 to lr, then a decay that reaches eta_min on the run's last step; the rate
  changes within epochs (a 9-epoch run still anneals)."""
  config = _sgd_config(lr_schedule=name, lr=0.02, eta_min=0.0, lr_warmup_epochs=1.5, warmup_epochs=1,
                       cycle_num=2, cycle_len=4)
  rates = _rates(schedules.make_optimizer(config, 4), _params(), 9 * 4)
  assert rates[0] == 0.0 and rates[6] == pytest.approx(0.02)
  assert np.all(np.diff(rates[:7]) > 0) and np.all(np.diff(rates[6:]) < 0)
  assert rates[-1] == pytest.approx(0.02 * (1 / 30 if name == "warmup_linear" else 0.0027390523), rel=1e-4)
  middle = 6 + 15  # halfway through the decay
  assert rates[middle] == pytest.approx(0.01, rel=1e-5)
