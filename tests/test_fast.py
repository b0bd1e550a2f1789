"Tests for kdnotes.fast: the fast recipe, packed (vmap / loop) training, the benchmark and its CLI, on tiny CPU configs."
import argparse, copy, json
import pytest
import torch
from kdnotes.data import Split, Augment, CIFAR_NORM, augment
from kdnotes.models import PreActResNet
from kdnotes.train import TrainConfig, train_classifier, predict
from kdnotes.distill import DistillConfig, teacher_loss, frozen
from kdnotes.fast import (FastConfig, fast_recipe, maybe_compile, is_compiled, fast_train, Packed, LoopPacked, pack, packed_loss,
                          packed_kd_loss, train_packed, distill_packed, TorchvisionStyle, baseline_transform, baseline_fit,
                          BenchConfig, bench_data, run_bench, plot_bench, add_cli, fake_cifar,
                          max_state_diff, relative_state_gap)

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
