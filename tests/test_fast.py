"Tests for kdnotes.fast and kdnotes.packing: the fast recipe, packed (vmap / loop) training, the benchmark and its CLI, on tiny CPU configs."
import argparse, copy, json
import pytest
import torch
from kdnotes.data import Split, Augment, CIFAR_NORM, augment
from kdnotes.models import PreActResNet
from kdnotes.train import TrainConfig, train_classifier, predict
from kdnotes.distill import DistillConfig, teacher_loss, frozen
from kdnotes.models import LoopPacked
from kdnotes.packing import (maybe_compile, is_compiled, Packed, pack, packed_loss, packed_kd_loss, train_packed,
                             distill_packed, max_state_diff, relative_state_gap)
from kdnotes.fast import (FastConfig, fast_recipe, fast_train, TorchvisionStyle, baseline_transform, baseline_fit,
                          BenchConfig, bench_data, run_bench, plot_bench, add_cli, fake_cifar)

torch.set_num_threads(1)  # shared CPU; also avoids OpenMP spinning
AUG = Augment(pad=2, flip=True, **CIFAR_NORM)


def small(seed, width=8):  # width 8: torch 2.14 CPU corrupts the heap in conv backward with 4-channel channels-last inputs
    torch.manual_seed(seed); return PreActResNet(8, in_shape=(3, 16, 16), width=width)


@pytest.fixture(scope='module')
def tiny():
    g = torch.Generator().manual_seed(0)
    return Split(torch.randint(0, 256, (48, 3, 16, 16), dtype=torch.uint8, generator=g), torch.randint(0, 10, (48,), generator=g))


def test_recipe_scales_lr_and_warmup():
    cfg = fast_recipe(200, FastConfig(batch_size=512, base_lr=0.1, base_batch=128))
    assert (cfg.lr, cfg.warmup_epochs, cfg.batch_size, cfg.schedule) == (0.4, 5.0, 512, 'cosine')
    assert fast_recipe(10, FastConfig(batch_size=128)).warmup_epochs == 0.0
    assert fast_recipe(10, FastConfig(batch_size=2048)).warmup_epochs == pytest.approx(1.0)
    assert fast_recipe(3, FastConfig(), seed=7).seed == 7
    with pytest.raises(ValueError, match='batch sizes must be >= 1'): fast_recipe(10, FastConfig(batch_size=0))


def test_compile_off_on_cpu_by_default():
    assert not is_compiled(maybe_compile(small(0), 'auto', 'cpu'))
    assert not is_compiled(maybe_compile(small(0), 'off', 'cuda'))
    assert is_compiled(maybe_compile(small(0), 'default', 'cpu'))  # lazy: nothing compiles until called
    with pytest.raises(ValueError, match='choose one of'): maybe_compile(small(0), 'turbo')


def test_torchvision_pipeline_matches_device_augment_without_randomness():
    data = fake_cifar(4, 2)['train']
    plain = Augment(**CIFAR_NORM)
    tv = torch.stack([TorchvisionStyle(data, baseline_transform(plain))[i][0] for i in range(4)])
    torch.testing.assert_close(tv, augment(data.x, plain, train=False), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match='needs uint8'): TorchvisionStyle(Split(torch.rand(2, 3, 8, 8), torch.zeros(2, dtype=torch.long)), None)


def test_baseline_and_fast_train_run(tiny):
    hb = baseline_fit(small(0), tiny, 2, AUG, batch_size=16, workers=0, device='cpu')
    hf = fast_train(small(0), tiny, 2, FastConfig(batch_size=32, base_batch=16), AUG, device='cpu')
    assert len(hb) == len(hf) == 2 and all(h['loss'] > 0 for h in hb + hf)


@pytest.mark.parametrize('method', ['vmap', 'loop'])
def test_packed_training_equals_separate_training(tiny, method):
    inits = [small(s) for s in range(3)]
    def both(cfg):
        separate = [copy.deepcopy(m) for m in inits]
        for m in separate: train_classifier(m, tiny, cfg, AUG)
        packed, hist = train_packed([copy.deepcopy(m) for m in inits], tiny, cfg, AUG, method=method)
        return separate, packed, hist
    # one step: equal up to round-off (vmap sums in another order), bit-equal for the loop
    separate, packed, _ = both(TrainConfig(epochs=1, batch_size=len(tiny), lr=0.05, seed=0, device='cpu', progress=False))
    for a, b in zip(separate, packed): assert max_state_diff(a, b) < (1e-6 if method == 'vmap' else 1e-12)
    # 6 steps: training is chaotic (a 1e-7 nudge of plain training sometimes grows to 1e-3), so vmap gets a relative bound
    separate, packed, hist = both(TrainConfig(epochs=2, batch_size=16, lr=0.05, seed=0, device='cpu', progress=False))
    assert len(hist) == 2 and len(packed) == 3
    for a, b, m0 in zip(separate, packed, inits):
        assert relative_state_gap(a, b, m0) < 0.05 if method == 'vmap' else max_state_diff(a, b) == 0
        assert a.bn.num_batches_tracked.item() == b.bn.num_batches_tracked.item() == 6
        if method == 'loop': torch.testing.assert_close(predict(a, tiny, AUG), predict(b, tiny, AUG), atol=0, rtol=0)
    assert max_state_diff(packed[0], packed[1]) > 1e-3  # the models stay different


def test_packed_module_basics():
    models = [small(s) for s in range(2)]
    p = Packed(models); x = torch.randn(4, 3, 16, 16)
    torch.testing.assert_close(p(x), torch.stack([m(x) for m in models]), atol=1e-5, rtol=0)
    assert p.to(memory_format=torch.channels_last) is p  # 5-D stacked weights: memory format ignored, no error
    assert [max_state_diff(a, b) for a, b in zip(p.unpack(), models)] == [0.0, 0.0]
    assert LoopPacked(models)(x).shape == (2, 4, 10)
    with pytest.raises(ValueError, match="use method='loop'"): Packed([small(0), small(0, width=16)])
    with pytest.raises(ValueError, match='at least one model'): Packed([])
    with pytest.raises(ValueError, match='at least one model'): LoopPacked([])
    with pytest.raises(ValueError, match='choose one of'): pack(models, 'threads')


def test_packed_kd_loss_calls_teacher_once_with_per_student_gradients(tiny):
    teacher = frozen(small(99)); cfg = DistillConfig(T=3.0)
    calls = []
    def counting(x): calls.append(1); return teacher(x)
    students = [small(s) for s in range(3)]; p = Packed(students)
    x = augment(tiny.x[:8], AUG, train=False)
    packed_kd_loss(counting, cfg)(p(x), x, tiny.y[:8]).backward()
    assert len(calls) == 1
    for k, s in enumerate(students):
        teacher_loss(teacher, cfg)(s(x), x, tiny.y[:8]).backward()
        torch.testing.assert_close(p.stacked[-1].grad[k], list(s.parameters())[-1].grad, atol=1e-5, rtol=0)


def test_distill_packed(tiny):
    teacher = small(50)
    cfg = DistillConfig(T=4.0, train=TrainConfig(epochs=1, batch_size=16, lr=0.05, seed=1, device='cpu', progress=False))
    students, res = distill_packed(teacher, [small(s) for s in range(2)], tiny, tiny, cfg, AUG)
    assert len(students) == len(res) == 2 and all(0 <= r['agreement'] <= 1 and r['kl'] >= 0 for r in res)


def test_bench_data_errors():
    with pytest.raises(ValueError, match="choose 'cifar10' or 'fake'"): bench_data(BenchConfig(dataset='imagenet'))
    with pytest.raises(ValueError, match='unknown bench parts'): run_bench(BenchConfig(dataset='fake', parts=('speed', 'warp')))


def test_plot_bench_skips_failed_measurements():
    speed = dict(baseline=dict(images_per_s=10.0), fast=dict(error='boom'))
    fig = plot_bench(speed, dict(k=2, sequential=dict(images_per_s=5.0), vmap=dict(images_per_s=9.0)))
    assert len(fig.axes) == 2


def test_cli_bench_tiny(tmp_path, capsys):
    ap = argparse.ArgumentParser(prog='kdnotes'); sub = ap.add_subparsers()
    add_cli(sub)
    args = ap.parse_args(['bench', '--dataset', 'fake', '--model', 'resnet20', '--device', 'cpu', '--images', '32', '--test-images', '16',
                          '--batch-size', '32', '--base-batch', '16', '--workers', '0', '--k', '2', '--repeats', '1',
                          '--epochs', '1', '--seeds', '1', '--full-epochs', '1', '--out', str(tmp_path)])
    res = args.func(args)
    assert set(res) == {'speed', 'packed', 'acc', 'full'}
    assert res['speed']['speedup'] > 0 and res['packed']['best'] in ('vmap', 'loop')
    names = sorted(p.name.split('-')[0] for p in tmp_path.iterdir())
    assert names == ['acc', 'bench', 'full', 'packed', 'speed']
    rec = json.loads(next(tmp_path.glob('speed-*.json')).read_text())
    assert {'device', 'torch', 'git_commit', 'wall_seconds'} <= set(rec['provenance']) and rec['config']['model'] == 'resnet20'
    out = capsys.readouterr().out
    assert 'speed-up' in out and 'images/s' in out


def test_fast_train_drops_the_partial_last_batch(tiny):
    calls = []

    def counting(logits, x, y):
        calls.append(len(x))
        return torch.nn.functional.cross_entropy(logits, y)

    fast_train(
        small(0), tiny, 2, FastConfig(batch_size=32, base_batch=32), AUG, device='cpu', loss_fn=counting
    )
    assert calls == [
        32,
        32,
    ]  # 48 images: one full batch per epoch, the 16 left over are dropped (one batch shape)
    calls.clear()
    fast_train(
        small(0), tiny[:20], 1, FastConfig(batch_size=32, base_batch=32), AUG, device='cpu', loss_fn=counting
    )
    assert calls == [20]  # fewer images than a batch: kept


def test_eager_runs_the_uncompiled_module():
    from kdnotes.fast import eager

    m = maybe_compile(small(0), 'default', 'cpu')
    with eager(m):
        assert not is_compiled(m)
    assert is_compiled(m)


def test_distill_packed_pairs_student_k_with_teacher_k(tiny):
    class Constant(torch.nn.Module):  # a teacher that always says class 3
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return torch.zeros(len(x), 10).index_fill(1, torch.tensor([3]), 8.0) + 0 * self.w

    cfg = DistillConfig(
        T=1.0, train=TrainConfig(epochs=4, batch_size=16, lr=0.05, seed=1, device='cpu', progress=False)
    )
    other = small(50)
    students, res = distill_packed(
        [other, Constant()], [small(1), small(2)], tiny, tiny, cfg, AUG, method='loop'
    )
    p1 = predict(students[1], tiny, AUG).argmax(1)
    assert (p1 == 3).float().mean() > 0.9 and res[1]['teacher_acc'] == (tiny.y == 3).float().mean().item()
    assert res[0]['teacher_acc'] != res[1]['teacher_acc'] or (predict(other, tiny, AUG).argmax(1) == 3).all()
    with pytest.raises(ValueError, match='one per student'):
        distill_packed([other], [small(1), small(2)], tiny, tiny, cfg, AUG)


def test_ensemble_groups_match_ensembles(tiny):
    from kdnotes.packing import EnsembleGroups
    from kdnotes.models import Ensemble

    pool = [small(s).eval() for s in range(3)]
    eg = EnsembleGroups(pool, [[0], [1, 2], [0, 1, 2]]).eval()
    x = augment(tiny.x[:8], AUG, train=False)
    with torch.no_grad():
        torch.testing.assert_close(
            eg(x), torch.stack([Ensemble([pool[i] for i in g])(x) for g in eg.groups]), atol=1e-5, rtol=0
        )
    assert len(eg.ensembles()) == 3 and eg.ensembles()[0] is pool[0]
    with pytest.raises(ValueError, match='at least one member'):
        EnsembleGroups(pool, [[]])
    cfg = DistillConfig(
        T=4.0, train=TrainConfig(epochs=1, batch_size=16, lr=0.05, seed=1, device='cpu', progress=False)
    )
    students, res = distill_packed(eg, [small(10 + k) for k in range(3)], tiny, tiny, cfg, AUG)
    assert len(res) == 3 and res[0]['teacher_acc'] == pytest.approx(
        (predict(pool[0], tiny, AUG).argmax(1) == tiny.y).float().mean().item()
    )


def test_bench_config_checked_before_work(tmp_path):
    from kdnotes.fast import check_bench_config

    check_bench_config(BenchConfig())
    for bad, msg in (
        (dict(k=0), '--k must be a whole number >= 1'),
        (dict(images=0), '--images must be a whole number >= 1'),
        (dict(model='vgg'), 'unknown model'),
        (dict(workers=-1), '--workers must be a whole number >= 0'),
        (dict(base_lr=0), '--base-lr must be a finite number > 0'),
        (dict(compile='fast'), 'compile mode'),
    ):
        with pytest.raises(ValueError, match=msg):
            run_bench(BenchConfig(dataset='fake', **bad), tmp_path)
    assert not list(tmp_path.iterdir())  # nothing written


# ---- the lent-GPU driver (tools/gpu_task.py): unit selection, saving as it goes (whole script: make gpu-dry-run)
def _gpu_task():
    import importlib.util, sys
    from pathlib import Path

    p = Path(__file__).resolve().parents[1] / 'tools' / 'gpu_task.py'
    spec = importlib.util.spec_from_file_location('gpu_task', p)
    mod = importlib.util.module_from_spec(spec)
    sys.modules['gpu_task'] = mod
    spec.loader.exec_module(mod)
    return mod


def test_gpu_task_picks_the_first_unit_without_a_complete_record(tmp_path):
    gt = _gpu_task()
    assert gt.next_unit(tmp_path) == 'U1'
    (tmp_path / 'U1-aaa.json').write_text(json.dumps(dict(unit='U1', complete=True)))
    (tmp_path / 'U2-bbb.json').write_text(json.dumps(dict(unit='U2', complete=False)))  # killed: done again
    (tmp_path / 'U3-ccc.json').write_text('{not json')
    assert gt.done_units(tmp_path) == {'U1'} and gt.next_unit(tmp_path) == 'U2'
    for u in ('U2', 'U3', 'U4'):
        (tmp_path / f'{u}-x.json').write_text(json.dumps(dict(unit=u, complete=True)))
    assert gt.next_unit(tmp_path) is None


def test_gpu_task_saver_packs_every_record_as_it_goes(tmp_path):
    import tarfile

    gt = _gpu_task()
    s = gt.Saver(tmp_path / 'out', tmp_path / 'work')
    (tmp_path / 'out').mkdir()
    s.save('U2-abc.json', dict(pieces={'teachers': [1]}))
    s.save('probe-x.json', dict(ok=True))
    s.save(
        'U2-abc.json', dict(pieces={'teachers': [1], 'students': [2]})
    )  # a later piece replaces the record
    with tarfile.open(tmp_path / 'out' / 'results.tar') as tar:
        assert sorted(tar.getnames()) == ['nbs/results/gpu/U2-abc.json', 'nbs/results/gpu/probe-x.json']
        assert json.loads(tar.extractfile('nbs/results/gpu/U2-abc.json').read())['pieces']['students'] == [2]
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['results.tar']


def test_gpu_task_refuses_a_gpu_run_without_commit_or_gpu(tmp_path, monkeypatch):
    gt = _gpu_task()
    monkeypatch.delenv('KDNOTES_GIT_COMMIT', raising=False)
    assert gt.main(['--out', str(tmp_path)]) == 2  # no GPU here (and no commit): stops before any work
    assert (
        'no GPU visible' in (tmp_path / 'log.txt').read_text()
        or 'KDNOTES_GIT_COMMIT' in (tmp_path / 'log.txt').read_text()
    )
    with pytest.raises(SystemExit):
        gt.main(['--unit', 'U9', '--out', str(tmp_path)])
    monkeypatch.setenv('KDNOTES_GIT_COMMIT', 'abc123')
    assert gt.commit() == 'abc123'
