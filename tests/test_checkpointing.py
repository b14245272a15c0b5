"""cen_jax.training.checkpointing: round trips, best, resume, sharding."""

import json
import math
import pickle

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from cen_jax.training import checkpointing
from tests import tiny


def _state(seed: int, step: int) -> dict:
  """A small train state whose every leaf is non-trivial."""
  keys = jax.random.split(jax.random.key(seed), 4)
  params = {'conv1': {'kernel': jax.random.normal(keys[0], (3, 3, 2, 4))},
            'clf': {'bias': jax.random.normal(keys[1], (5,))}}
  batch_stats = {'bn1': {'mean': jax.random.normal(keys[2], (2, 4)),
                         'var': jax.random.uniform(keys[3], (2, 4))}}
  tx = optax.sgd(0.1, momentum=0.9)
  grads = jax.tree.map(lambda p: p * 0.5 + 1, params)
  _, opt_state = tx.update(grads, tx.init(params), params)
  return {'params': params, 'batch_stats': batch_stats,
          'opt_state': opt_state, 'step': step}


def _template(state: dict) -> dict:
  """Zeros shaped like ``state``; Python scalars stay Python scalars."""
  return jax.tree.map(
      lambda x: jnp.zeros_like(x) if isinstance(x, jax.Array) else type(x)(),
      state)


def _assert_trees_equal(got, want) -> None:
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want),
                  strict=True):
    assert np.asarray(g).dtype == np.asarray(w).dtype
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_replicated_state_saves_without_compiling_on_cpu(tmp_path):
  """On the CPU backend a replicated array is saved whole from replica 0:
  no per-shape slice programs are compiled, and it restores bit for bit."""
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:4]), ('data',))
  rep = NamedSharding(mesh, P())
  state = jax.device_put(_state(3, 5), rep)
  compiles = []

  def listen(event, duration, **kwargs):
    del duration, kwargs
    if event == '/jax/core/compile/backend_compile_duration':
      compiles.append(event)

  jax.monitoring.register_event_duration_secs_listener(listen)
  try:
    with checkpointing.Checkpointer(tmp_path) as ckpt:
      ckpt.save_latest(5, state)
      ckpt.wait_until_finished()
  finally:
    jax.monitoring.unregister_event_duration_listener(listen)
  assert compiles == []
  template = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep)
      if isinstance(x, jax.Array) else x, state)
  with checkpointing.Checkpointer(tmp_path, read_only=True) as ckpt:
    got = ckpt.restore_latest(template).state
  _assert_trees_equal(got, state)
  assert got['params']['conv1']['kernel'].sharding == rep


def test_latest_round_trip_is_bit_exact(tmp_path):
  state = _state(0, 7)
  data_state = {'next_index': 42, 'epoch': [1, 2]}
  with checkpointing.Checkpointer(tmp_path) as ckpt:
    assert ckpt.save_latest(7, state, data_state)
    got = ckpt.restore_latest(_template(state))
  assert got.step == 7
  assert got.data_state == data_state
  _assert_trees_equal(got.state, state)
  assert got.state['step'] == 7
  assert isinstance(got.state['opt_state'][0], optax.TraceState)
  restored_state, restored_data, step = got  # unpacks as a triple
  assert step == 7 and restored_data == data_state
  assert restored_state is got.state


def test_resume_on_an_empty_workdir_returns_none(tmp_path):
  with checkpointing.Checkpointer(tmp_path) as ckpt:
    assert ckpt.latest_step is None
    assert ckpt.restore_latest({'x': jnp.zeros(3)}) is None
    assert ckpt.restore_best({'x': jnp.zeros(3)}) is None
    assert ckpt.best_value is None


def test_bytes_data_state_round_trip(tmp_path):
  # grain's DataLoaderIterator returns bytes; any bytes must survive.
  data_state = b'{"last_seen_indices": {"0": 11}}\x00\xff'
  state = {'x': jnp.arange(3.0)}
  with checkpointing.Checkpointer(tmp_path, async_save=False) as ckpt:
    ckpt.save_latest(1, state, data_state)
    assert ckpt.restore_latest(_template(state)).data_state == data_state
    ckpt.save_latest(2, state)
    assert ckpt.restore_latest(_template(state)).data_state is None


def test_grain_iterator_resumes_where_it_stopped(tmp_path):
  dataset = grain.MapDataset.range(20).shuffle(seed=3).batch(2)
  iterator = iter(dataset.to_iter_dataset())
  for _ in range(3):
    next(iterator)
  state = {'x': jnp.ones(2)}
  with checkpointing.Checkpointer(tmp_path) as ckpt:
    ckpt.save_latest(3, state, iterator.get_state())
    expected = [next(iterator) for _ in range(2)]
  with checkpointing.Checkpointer(tmp_path) as ckpt:
    data_state = ckpt.restore_latest(_template(state)).data_state
  resumed = iter(dataset.to_iter_dataset())
  resumed.set_state(data_state)
  for want in expected:
    np.testing.assert_array_equal(next(resumed), want)


def test_iterator_saved_per_process_resumes_where_it_stopped(tmp_path):
  """grain's own handler: this process's position, taken at the save even
  though the save finishes in the background while the iterator moves on."""
  dataset = grain.MapDataset.range(20).shuffle(seed=3).batch(2)
  iterator = iter(dataset.to_iter_dataset())
  for _ in range(3):
    next(iterator)
  state = {'x': jnp.ones(2)}
  with checkpointing.Checkpointer(tmp_path) as ckpt:
    ckpt.save_latest(3, state, iterator)
    expected = [next(iterator) for _ in range(2)]
  step_dir = tmp_path / 'checkpoints' / 'latest' / '3'
  assert [p.name for p in (step_dir / 'iterator').iterdir()
          if p.name.startswith('process_')] == ['process_0-of-1.json']
  resumed = iter(dataset.to_iter_dataset())
  with checkpointing.Checkpointer(tmp_path) as ckpt:
    got = ckpt.restore_latest(_template(state), iterator=resumed)
  assert got.step == 3 and got.data_state is None
  for want in expected:
    np.testing.assert_array_equal(next(resumed), want)


def test_data_positions_of_another_process_count_are_refused(tmp_path):
  dataset = grain.MapDataset.range(20).batch(2)
  iterator = iter(dataset.to_iter_dataset())
  with checkpointing.Checkpointer(tmp_path) as ckpt:
    ckpt.save_latest(1, {'x': jnp.ones(2)}, iterator)
  positions = tmp_path / 'checkpoints' / 'latest' / '1' / 'iterator'
  (positions / 'process_0-of-1.json').rename(
      positions / 'process_0-of-2.json')
  (positions / 'process_1-of-2.json').write_text('{}')
  with checkpointing.Checkpointer(tmp_path) as ckpt:
    with pytest.raises(checkpointing.DataPositionError,
                       match=r"process_0-of-2.json', 'process_1-of-2.json'\]"
                       r".*this run has 1 and would need process_0-of-1"):
      ckpt.restore_latest_intact({'x': jnp.zeros(2)}, iterator=iterator)
    assert ckpt.latest_step == 1  # not mistaken for a broken checkpoint


def test_latest_keeps_the_newest_and_restores_a_given_step(tmp_path):
  with checkpointing.Checkpointer(tmp_path, keep_latest=2) as ckpt:
    for step in (1, 2, 3):
      assert ckpt.save_latest(step, _state(step, step), {'i': step})
    assert not ckpt.save_latest(3, _state(0, 3))  # already saved
    ckpt.wait_until_finished()
    latest_dir = tmp_path / 'checkpoints' / 'latest'
    assert sorted(p.name for p in latest_dir.iterdir()) == ['2', '3']
    got = ckpt.restore(2, _template(_state(0, 0)))
    _assert_trees_equal(got.state, _state(2, 2))
    assert (got.data_state, got.step) == ({'i': 2}, 2)
    with pytest.raises(FileNotFoundError):
      ckpt.restore(1, _template(_state(0, 0)))


def test_best_only_on_improvement_across_restarts(tmp_path):
  with checkpointing.Checkpointer(tmp_path) as ckpt:
    assert ckpt.save_best(10, _state(10, 10), 40.0)
    assert not ckpt.save_best(20, _state(20, 20), 35.0)  # worse
    assert not ckpt.save_best(30, _state(30, 30), 40.0)  # a tie
    assert not ckpt.save_best(35, _state(35, 35), math.nan)
  with checkpointing.Checkpointer(tmp_path) as ckpt:
    assert (ckpt.best_step, ckpt.best_value) == (10, 40.0)
    assert not ckpt.save_best(40, _state(40, 40), 39.9)
    assert ckpt.save_best(50, _state(50, 50), 45.5)
    assert ckpt.latest_step is None  # best never touches latest
  with checkpointing.Checkpointer(tmp_path) as ckpt:
    assert (ckpt.best_step, ckpt.best_value) == (50, 45.5)
    got = ckpt.restore_best(_template(_state(0, 0)))
    _assert_trees_equal(got.state, _state(50, 50))
    assert got.step == 50
    # A run resumed from an older `latest` may beat the best at a lower step.
    assert ckpt.save_best(45, _state(45, 45), 46.0)
    assert (ckpt.best_step, ckpt.best_value) == (45, 46.0)
  best_dir = tmp_path / 'checkpoints' / 'best'
  assert [p.name for p in best_dir.iterdir()] == ['45']  # keep 1


def test_best_with_mode_min_keeps_the_lowest_metric(tmp_path):
  """FID-like metrics: lower is better, across restarts too."""
  kw = dict(metric_name='fid', mode='min')
  with checkpointing.Checkpointer(tmp_path, **kw) as ckpt:
    assert ckpt.save_best(10, _state(10, 10), 80.0)
    assert not ckpt.save_best(20, _state(20, 20), 90.0)  # worse
    assert not ckpt.save_best(25, _state(25, 25), 80.0)  # a tie
    assert ckpt.save_best(30, _state(30, 30), 62.6)
  with checkpointing.Checkpointer(tmp_path, **kw) as ckpt:
    assert (ckpt.best_step, ckpt.best_value) == (30, 62.6)
    assert not ckpt.save_best(40, _state(40, 40), 70.0)
    assert ckpt.save_best(50, _state(50, 50), 61.0)
  best_dir = tmp_path / 'checkpoints' / 'best'
  assert [p.name for p in best_dir.iterdir()] == ['50']
  with pytest.raises(ValueError, match="'max' or 'min'"):
    checkpointing.Checkpointer(tmp_path, mode='lowest')


def test_a_best_ranked_by_another_metric_is_a_clear_error(tmp_path):
  """A workdir whose best was ranked by 'l1', reopened ranking by 'fid'."""
  with checkpointing.Checkpointer(tmp_path, metric_name='l1',
                                  mode='min') as ckpt:
    assert ckpt.save_best(10, _state(10, 10), 0.25)
  best_dir = tmp_path / 'checkpoints' / 'best'
  with pytest.raises(ValueError, match=r"(?s)checkpoints/best.*\['l1'\].*"
                     r"'fid'.*new workdir"):
    checkpointing.Checkpointer(tmp_path, metric_name='fid', mode='min')
  assert [p.name for p in best_dir.iterdir()] == ['10']  # Left as it was.


def test_partial_restore_reads_only_the_weights(tmp_path):
  """Evaluation restores params and batch_stats, not the optimiser."""
  state = _state(3, 7)
  with checkpointing.Checkpointer(tmp_path) as ckpt:
    ckpt.save_latest(7, state, {'next_index': 1})
    ckpt.save_best(7, state, 50.0)
  weights = {k: state[k] for k in ('params', 'batch_stats')}
  with checkpointing.Checkpointer(tmp_path) as ckpt:
    for restore in (ckpt.restore_latest, ckpt.restore_best):
      got = restore(_template(weights), partial=True)
      assert got.step == 7 and got.data_state is None
      _assert_trees_equal(got.state, weights)


def test_restore_into_a_sharded_template_keeps_its_sharding(tmp_path):
  mesh = jax.make_mesh((4,), ('data',),
                       axis_types=(jax.sharding.AxisType.Auto,))
  replicated = NamedSharding(mesh, P())
  rows = NamedSharding(mesh, P('data'))
  state = {'w': jnp.arange(24.0).reshape(8, 3), 'b': jnp.arange(3.0),
           'step': 5}
  template = {
      'w': jax.ShapeDtypeStruct((8, 3), jnp.float32, sharding=rows),
      'b': jax.device_put(jnp.zeros(3), replicated),  # a concrete leaf
      'step': 0,
  }
  with checkpointing.Checkpointer(tmp_path) as ckpt:
    ckpt.save_latest(5, state)
    got = ckpt.restore_latest(template).state
  assert got['w'].sharding == rows
  assert got['b'].sharding == replicated
  _assert_trees_equal(got, state)


def test_async_save_survives_donating_the_saved_arrays(tmp_path):
  # The trainer donates its state to the next step right after saving.
  x = jax.random.normal(jax.random.key(1), (512, 1024))
  # Not np.asarray(x): a host view of x would keep XLA from donating it.
  want = np.asarray(jax.random.normal(jax.random.key(1), (512, 1024)))
  overwrite = jax.jit(lambda s: {'x': s['x'] * 0 - 1}, donate_argnums=0)
  with checkpointing.Checkpointer(tmp_path) as ckpt:
    ckpt.save_latest(1, {'x': x})
    out = overwrite({'x': x})
    # On CPU, XLA declines the donation while orbax still holds a host view
    # of x; on accelerators orbax has copied x off the device. Either way
    # the checkpoint must hold the values from before the step.
    jax.block_until_ready(out)
    got = ckpt.restore_latest({'x': jnp.zeros_like(out['x'])})
  np.testing.assert_array_equal(np.asarray(got.state['x']), want)


def test_a_save_killed_before_its_rename_is_ignored(tmp_path):
  state = _state(0, 3)
  with checkpointing.Checkpointer(tmp_path) as ckpt:
    ckpt.save_latest(3, state)
  # What a process killed while writing step 9 leaves behind.
  stale = tmp_path / 'checkpoints' / 'latest' / '9.orbax-checkpoint-tmp-17'
  (stale / 'state').mkdir(parents=True)
  (stale / 'state' / 'partial').write_text('garbage')
  with checkpointing.Checkpointer(tmp_path) as ckpt:
    got = ckpt.restore_latest(_template(state))
  assert got.step == 3
  _assert_trees_equal(got.state, state)
  assert not stale.exists()


def test_a_reader_leaves_a_save_in_flight_alone(tmp_path):
  """eval/predict open the workdir read-only: a save a training run is
  writing there (its temporary directory) survives, and restoring works."""
  state = _state(0, 3)
  with checkpointing.Checkpointer(tmp_path) as ckpt:
    ckpt.save_latest(3, state)
    ckpt.save_best(3, state, 1.0)
  in_flight = [tmp_path / 'checkpoints' / sub / '9.orbax-checkpoint-tmp'
               for sub in ('latest', 'best')]
  for d in in_flight:
    (d / 'state').mkdir(parents=True)
    (d / 'state' / 'partial').write_text('being written')
  with checkpointing.Checkpointer(tmp_path, read_only=True) as ckpt:
    got = ckpt.restore_latest(_template(state))
    best = ckpt.restore_best(_template(state))
  assert got.step == 3 and best.step == 3
  _assert_trees_equal(got.state, state)
  for d in in_flight:
    assert (d / 'state' / 'partial').read_text() == 'being written'


def test_write_config_json(tmp_path):
  workdir = tmp_path / 'run'
  config = {'model': {'depth': 101, 'exchange': 'bn_l1'},
            'lrs': (5e-4, 2.5e-4), 'dtype': np.float32}
  path = checkpointing.write_config_json(workdir, config)
  assert path == workdir / 'config.json'
  assert json.loads(path.read_text()) == {
      'dtype': str(np.float32), 'lrs': [5e-4, 2.5e-4],
      'model': {'depth': 101, 'exchange': 'bn_l1'}}
  assert [p.name for p in workdir.iterdir()] == ['config.json']


def test_params_checkpoint_round_trips_bit_for_bit(tmp_path):
  _, variables = tiny.model_and_variables()
  path = tmp_path / 'params'
  checkpointing.save_variables(path, variables)
  restored = checkpointing.load_variables(path)
  assert (jax.tree.structure(restored) == jax.tree.structure(variables))
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(
      np.asarray(a), b, strict=True), restored, variables)
  # With a template, the restore follows its structure and dtypes.
  template = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                          variables)
  again = checkpointing.load_variables(path, template)
  assert pickle.dumps(jax.tree.map(np.asarray, again)) == pickle.dumps(
      jax.tree.map(np.asarray, variables))


def test_params_checkpoint_overwrites_only_when_allowed(tmp_path):
  path = tmp_path / 'params'
  checkpointing.save_variables(path, {'w': np.zeros(3, np.float32)})
  with pytest.raises(ValueError, match='exists'):
    checkpointing.save_variables(path, {'w': np.ones(3, np.float32)},
                                 overwrite=False)
  checkpointing.save_variables(path, {'w': np.ones(3, np.float32)})
  np.testing.assert_array_equal(
      checkpointing.load_variables(path)['w'], np.ones(3, np.float32))


def _break(step_dir, how):
  """Truncates the largest array file, or garbles the state metadata."""
  if how == 'truncated':
    files = [p for p in step_dir.rglob('*') if p.is_file()]
    biggest = max(files, key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[:100])
  else:
    (step_dir / 'state' / '_METADATA').write_text('{not json')


@pytest.mark.parametrize('how', ['truncated', 'corrupt metadata'])
def test_a_broken_latest_falls_back_to_the_newest_intact_one(tmp_path, how):
  with checkpointing.Checkpointer(tmp_path, keep_latest=3,
                                  async_save=False) as ckpt:
    for step in (2, 4):
      ckpt.save_latest(step, _state(step, step), {'next_index': step})
  latest = tmp_path / 'checkpoints' / 'latest'
  _break(latest / '4', how)
  with checkpointing.Checkpointer(tmp_path, keep_latest=3) as ckpt:
    got = ckpt.restore_latest_intact(_template(_state(0, 0)))
    assert got.step == 2 and got.data_state == {'next_index': 2}
    _assert_trees_equal(got.state, _state(2, 2))
    # The broken one is moved aside, not deleted, and no longer latest.
    assert ckpt.latest_step == 2
    (moved,) = (tmp_path / 'checkpoints' / 'broken').iterdir()
    assert moved.name.startswith('latest_4_')
    # Training on saves step 4 again instead of skipping it as done.
    assert ckpt.save_latest(4, _state(4, 4))


def test_no_readable_checkpoint_stops_with_every_path(tmp_path):
  with checkpointing.Checkpointer(tmp_path, async_save=False) as ckpt:
    ckpt.save_latest(3, _state(3, 3))
  _break(tmp_path / 'checkpoints' / 'latest' / '3', 'truncated')
  with checkpointing.Checkpointer(tmp_path) as ckpt:
    with pytest.raises(checkpointing.BrokenCheckpointError,
                       match=r'latest/3 \(.*moved to .*broken/latest_3_'):
      ckpt.restore_latest_intact(_template(_state(0, 0)))


def test_a_relative_workdir_works(tmp_path, monkeypatch):
  """``--workdir=runs/x``: orbax itself accepts absolute paths only."""
  monkeypatch.chdir(tmp_path)
  with checkpointing.Checkpointer('runs/x') as ckpt:
    assert ckpt.save_latest(1, _state(1, 1))
    got = ckpt.restore_latest(_template(_state(0, 0)))
  _assert_trees_equal(got.state, _state(1, 1))
  assert (tmp_path / 'runs' / 'x' / 'checkpoints' / 'latest' / '1').is_dir()


def test_a_checkpoint_of_another_model_is_reported_not_moved(tmp_path):
  with checkpointing.Checkpointer(tmp_path, async_save=False) as ckpt:
    ckpt.save_latest(2, _state(2, 2))
  other = _template(_state(0, 0))
  other['params']['clf']['bias'] = jnp.zeros((7,))  # 5 classes were saved
  with checkpointing.Checkpointer(tmp_path) as ckpt:
    with pytest.raises(ValueError, match=r'latest/2 does not fit the model'):
      ckpt.restore_latest_intact(other)
    assert ckpt.latest_step == 2
  assert not (tmp_path / 'checkpoints' / 'broken').exists()


def _loader(seed):
  sampler = grain.samplers.IndexSampler(
      num_records=10, shard_options=grain.sharding.NoSharding(),
      shuffle=True, num_epochs=1, seed=seed)
  return grain.DataLoader(data_source=list(range(10)), sampler=sampler,
                          worker_count=0)


def test_data_position_of_another_sampler_is_refused(tmp_path):
  """Another seed, dataset or sharding would repeat data: refused."""
  iterator = iter(_loader(seed=1))
  next(iterator)
  with checkpointing.Checkpointer(tmp_path) as ckpt:
    ckpt.save_latest(1, {'x': jnp.ones(2)}, iterator)
  with checkpointing.Checkpointer(tmp_path) as ckpt:
    with pytest.raises(checkpointing.DataPositionError,
                       match=r'process_0-of-1\.json: the data loading '
                       r'changed.*Sampler'):
      ckpt.restore_latest_intact({'x': jnp.zeros(2)},
                                 iterator=iter(_loader(seed=2)))
    resumed = iter(_loader(seed=1))
    ckpt.restore_latest_intact({'x': jnp.zeros(2)}, iterator=resumed)
  assert list(resumed) == list(_loader(seed=1))[1:]
