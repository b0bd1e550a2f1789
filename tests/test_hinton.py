"Tests for kdnotes.hinton: soft targets, the soft-loss gradient, its high-T limit, the wrong-class matrix, the class bias and the CLI."
import argparse, json, re
import pytest
import torch
from matplotlib.figure import Figure
from kdnotes.data import Split
from kdnotes.models import MLP
from kdnotes.experiments import ResultStore
from pathlib import Path
from kdnotes.cli import main
from kdnotes.hinton import (soft_targets, plot_soft_targets, plot_soft_targets_grid, kd_grad, logit_matching_grad,
                            soft_confusion, confused_pairs, plot_soft_confusion, class_errors, choose_bias, raise_bias,
                            hinton_data, hinton_configs, hinton_table, dark_table, HintonConfig, HintonTeacherConfig,
                            add_cli, HINTON_2015, check_hinton_config, hinton_sweep)


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    return torch.randn(32, 10, generator=g) * 4, torch.randn(32, 10, generator=g) * 6, torch.arange(32) % 10


def test_soft_targets(logits):
    zs, zt, _ = logits
    assert torch.allclose(soft_targets(zt, 3.0).sum(1), torch.ones(32))
    assert torch.allclose(soft_targets(zt, 3.0), (zt / 3).softmax(1))
    assert torch.allclose(soft_targets(zt, 1e5), torch.full((32, 10), 0.1), atol=1e-4)
    with pytest.raises(ValueError, match='T must be > 0'): soft_targets(zt, 0.0)


def test_plot_soft_targets_pure(logits):
    _, zt, _ = logits
    import matplotlib.pyplot as plt
    n_open = len(plt.get_fignums())
    fig = plot_soft_targets(zt[0], 2.0, image=torch.rand(1, 28, 28), label=3)
    assert isinstance(fig, Figure) and len(plt.get_fignums()) == n_open  # no pyplot state
    assert [round(b.get_height(), 6) for b in fig.axes[1].patches] == [round(p, 6) for p in soft_targets(zt[0], 2.0).tolist()]
    assert len(plot_soft_targets(zt[0], 8.0).axes) == 1
    assert len(plot_soft_targets_grid(zt[0], (1, 2, 4, 8, 20)).axes) == 5
    with pytest.raises(ValueError, match='one input'): plot_soft_targets(zt[:2], 2.0)


@pytest.mark.parametrize('T', [1.0, 4.0, 20.0])
def test_kd_grad_matches_formula(logits, T):
    zs, zt, _ = logits
    q, p = (zs / T).softmax(1), (zt / T).softmax(1)
    assert torch.allclose(kd_grad(zs, zt, T), T * (q - p) / len(zs), atol=1e-7)
    assert torch.allclose(kd_grad(zs, zt, T, t2=False), (q - p) / T / len(zs), atol=1e-8)


def test_logit_matching_limit(logits):
    zs, zt, _ = logits
    err = lambda T: ((kd_grad(zs, zt, T) - logit_matching_grad(zs, zt)).norm() / kd_grad(zs, zt, T).norm()).item()
    assert err(1000.0) < 0.01 < err(2.0) and err(100.0) < err(10.0)
    # shift invariance: adding a constant to each row changes neither side
    assert torch.allclose(logit_matching_grad(zs + 5, zt - 3), logit_matching_grad(zs, zt), atol=1e-6)
    assert torch.allclose(logit_matching_grad(zs, zt, 10.0, t2=False), logit_matching_grad(zs, zt) / 100)
    with pytest.raises(ValueError): logit_matching_grad(zs, zt[:, :5])


def test_soft_confusion(logits):
    _, zt, y = logits
    M = soft_confusion(zt, y)
    assert M.shape == (10, 10) and torch.allclose(M.sum(1), torch.ones(10)) and M.diag().abs().max() == 0
    pairs = confused_pairs(M, 3)
    assert len(pairs) == 3 and pairs[0][2] >= pairs[1][2] >= pairs[2][2] and all(i != j for i, j, _ in pairs)
    assert isinstance(plot_soft_confusion(M, 5), Figure)
    with pytest.raises(ValueError, match='cover every class'): soft_confusion(zt[:5], y[:5])


def test_bias_choice_and_raise():
    y = torch.arange(100) % 10
    z = torch.nn.functional.one_hot(y, 10).float() * 4
    z[y == 3, 3] = 0; z[y == 3, 8] = 2.1  # never predicts 3; 3s look like 8s
    assert class_errors(z, y, 3) == dict(errors=10, errors_cls=10, n_cls=10, n=100)
    d = choose_bias(z, y, 3)
    assert d == 2.25 and class_errors(z + d * torch.nn.functional.one_hot(torch.tensor(3), 10), y, 3)['errors'] == 0
    m = MLP(hidden=(4,)); x = torch.rand(5, 1, 28, 28)
    with torch.no_grad(): before = m(x); after = raise_bias(m, 3, 1.5)(x)
    assert torch.allclose(after - before, 1.5 * torch.nn.functional.one_hot(torch.tensor(3), 10).float(), atol=1e-6)


def test_data_and_configs():
    d = hinton_data()
    assert [len(d[k]) for k in ('train', 'val', 'test')] == [3500, 500, 1000]
    assert torch.bincount(d['test'].y).tolist() == [100] * 10
    with pytest.raises(ValueError, match='val_per_class'): hinton_data(val_per_class=0)
    cfgs = hinton_configs((1, 2), (0.0, 0.5), (0, 1, 2))
    assert len(cfgs) == 3 + 12 and sum(c.alpha == 1.0 for c in cfgs) == 3
    assert HINTON_2015['errors_on_3'] == 133 and HINTON_2015['test_3s'] == 1010
    with pytest.raises(ValueError, match='run the sweep first'): hinton_table([])
    with pytest.raises(ValueError, match='run the sweep first'): dark_table([])


def test_cli_smoke(tmp_path):
    parser = argparse.ArgumentParser(prog='kdnotes'); add_cli(parser.add_subparsers(dest='cmd'))
    args = parser.parse_args(['hinton', '--out', str(tmp_path), '--Ts', '4', '--alphas', '0', '--seeds', '1', '--epochs', '1',
                              '--teacher-epochs', '1', '--teacher-hidden', '16', '--student-hidden', '4', '--threads', '1'])
    summary = args.func(args)
    assert (tmp_path / 'hinton_sweep.png').stat().st_size > 1000
    on_disk = json.loads((tmp_path / 'hinton_summary.json').read_text())
    assert len(on_disk['sweep']) == 2 and len(on_disk['dark']) == 1 and on_disk['hinton_2015']['errors'] == 206
    assert summary['dark'][0]['after_n_cls'] == 100
    store = ResultStore(tmp_path)
    assert len(store.records('kd')) == 2 and len(store.records('dark')) == 1
    assert 'provenance' in store.records('kd')[0]
    mtimes = {p: p.stat().st_mtime for p in tmp_path.glob('kd-*.json')}
    args.func(args)  # a second run resumes: nothing is retrained
    assert {p: p.stat().st_mtime for p in tmp_path.glob('kd-*.json')} == mtimes


def exit_status(argv) -> int:
    "main's exit status, whether argparse exits (bad option syntax) or main returns."
    try: return main(argv)
    except SystemExit as e: return e.code


@pytest.mark.parametrize('argv, msg', [
    (['--seeds', '0'], 'argument --seeds: expected an integer >= 1, got 0'),  # used to answer "no records"
    (['--seeds', 'x'], "argument --seeds: expected an integer >= 1, got 'x'"),
    (['--epochs', '-2'], 'argument --epochs: expected an integer >= 1'),
    (['--teacher-epochs', '0'], 'argument --teacher-epochs'),
    (['--Ts', '2', '0'], 'argument --Ts: expected a finite number > 0, got 0'),
    (['--alphas', '1.5'], 'argument --alphas: expected a number in [0, 1]'),
    (['--dark-T', '-4'], 'argument --dark-T'),
    (['--teacher-hidden', '512', '0'], 'argument --teacher-hidden'),
    (['--student-hidden', 'wide'], 'argument --student-hidden'),
    (['--threads', '-1'], 'threads must be an integer >= 0, got -1')])
def test_cli_bad_options_stop_at_parsing(tmp_path, capsys, argv, msg):
    assert exit_status(['hinton', *argv, '--out', str(tmp_path / 'o')]) == 2
    assert msg in capsys.readouterr().err
    assert not (tmp_path / 'o').exists()  # nothing trained, nothing written


def test_cli_unwritable_out_is_refused_before_training(tmp_path, capsys, monkeypatch):
    real = Path.write_text
    def deny(self, *a, **k):  # as root a read-only folder is still writable, so refuse the probe itself
        if self.name.startswith('.kdnotes-probe'): raise PermissionError(13, 'Permission denied', str(self))
        return real(self, *a, **k)
    monkeypatch.setattr(Path, 'write_text', deny)
    assert main(['hinton', '--seeds', '1', '--epochs', '1', '--out', str(tmp_path / 'ro')]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'cannot write to' in err and 'choose a writable folder with --out' in err
    assert not list(tmp_path.rglob('*.json'))


def test_configs_are_checked_before_training():
    check_hinton_config(HintonConfig())
    for bad, msg in [(dict(T=0.0), 'T must be > 0'), (dict(alpha=-0.1), 'alpha'),
                     (dict(epochs=0), 'epochs must be >= 1'), (dict(omit_class=11), 'omit_class'),
                     (dict(student_hidden=(0,)), 'student_hidden widths'),
                     (dict(teacher=HintonTeacherConfig(hidden=(512, 0))), 'teacher.hidden widths'),
                     (dict(teacher=HintonTeacherConfig(jitter=-1)), 'teacher.jitter')]:
        with pytest.raises(ValueError, match=re.escape(msg)): check_hinton_config(HintonConfig(**bad))
    with pytest.raises(ValueError, match='no configs to run'): hinton_sweep(hinton_configs(seeds=()), None)
    # the bad config is last, yet found before the first teacher trains (that would take seconds)
    with pytest.raises(ValueError, match='T must be > 0'):
        hinton_sweep([HintonConfig(), HintonConfig(T=0.0)], None, progress=False)


def test_class_and_temperature_arguments_are_checked(logits):
    zs, zt, y = logits
    with pytest.raises(ValueError, match='class must be in 0..9'): class_errors(zt, y, 10)
    with pytest.raises(ValueError, match='class must be in 0..9'): choose_bias(zt, y, -1)
    with pytest.raises(ValueError, match='class must be in 0..9'): raise_bias(MLP(hidden=(4,)), 10, 1.0)
    with pytest.raises(ValueError, match='T must be > 0'): soft_confusion(zt, y, T=0.0)
    with pytest.raises(ValueError, match='T must be > 0'): logit_matching_grad(zs, zt, T=0.0, t2=False)
    with pytest.raises(ValueError, match='k must be in 1..90'): confused_pairs(soft_confusion(zt, y), 0)
    with pytest.raises(ValueError, match='test_per_class must be >= 1'): hinton_data(test_per_class=0)
