"Edge cases and CLI smoke tests for kdnotes.tfkd (label smoothing, Tf-KD, temperature scaling, cross-quality KD)."
import argparse, json, math
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import warnings
import subprocess, sys
from kdnotes.tfkd import (ls_loss, virtual_teacher_logits, tfkd_virtual_loss, LowRes, tfkd_run, TfKDConfig,
                          tfkd_configs, crossq_configs, CROSSQ_METHODS, TFKD_METHODS, add_cli, tfkd_reg_official_loss,
                          tfkd_reg_effective_target, TfKDRegConfig, tfkd_reg_configs, CrossQConfig, tfkd_table, tfkd_data)
from kdnotes.metrics import fit_temperature, calibration_report
from kdnotes.cli import main
from kdnotes.distill import kd_loss
from kdnotes.train import TrainConfig
from kdnotes.models import LeNet5

torch.set_num_threads(1)


def test_label_smoothing_is_kd_with_uniform_teacher():
    torch.manual_seed(0)
    z, y = torch.randn(32, 7) * 2, torch.randint(0, 7, (32,))
    for eps in (0.0, 0.1, 0.5):
        want = kd_loss(z, torch.zeros_like(z), y, T=1.0, alpha=1 - eps) + eps * math.log(7)
        assert torch.allclose(ls_loss(eps)(z, None, y), want, atol=1e-5)
    with pytest.raises(ValueError, match=r'\[0, 1\)'): ls_loss(1.0)


def test_virtual_teacher_is_a_proper_tempered_distribution():
    y = torch.tensor([2, 0])
    p = virtual_teacher_logits(y, 5, a=0.8).softmax(1)
    assert torch.allclose(p[0], torch.tensor([0.05, 0.05, 0.8, 0.05, 0.05]), atol=1e-6)
    T = 3.0
    tempered = virtual_teacher_logits(y, 5, 0.8) / T
    want = p ** (1 / T) / (p ** (1 / T)).sum(1, keepdim=True)
    assert torch.allclose(tempered.softmax(1), want, atol=1e-6)
    naive = (p / 20).softmax(1)  # the trap: probabilities used as logits are nearly uniform
    assert (naive - 0.2).abs().max() < 0.01


@pytest.mark.parametrize('a', [0.1, 1.0, 1.5])
def test_virtual_teacher_bad_a(a):
    with pytest.raises(ValueError, match='a must be in'): virtual_teacher_logits(torch.tensor([0]), 10, a)


def test_virtual_loss_needs_labels():
    with pytest.raises(ValueError, match='drop unlabeled'): tfkd_virtual_loss()(torch.randn(2, 10), None, torch.tensor([1, -1]))


def test_fit_temperature_recovers_known_temperature():
    torch.manual_seed(0)
    z = torch.randn(5000, 10) * 2
    y = torch.multinomial(z.softmax(1), 1)[:, 0]
    assert abs(fit_temperature(z * 3, y) - 3) < 0.2
    assert abs(fit_temperature(z, y) - 1) < 0.08
    # minimises the NLL: nearby temperatures are no better
    T = fit_temperature(z * 3, y)
    f = lambda t: F.cross_entropy(z * 3 / t, y).item()
    assert f(T) <= min(f(T * 1.05), f(T / 1.05)) + 1e-7


def test_fit_temperature_bad_inputs():
    with pytest.raises(ValueError, match='labels must be'): fit_temperature(torch.randn(4, 3), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match='NaN'): fit_temperature(torch.full((2, 3), float('inf')), torch.zeros(2, dtype=torch.long))
    y = torch.tensor([0, 1, 2])
    assert fit_temperature(F.one_hot(y, 3).float() * 10, y) < 0.02  # perfect predictions: bounded by lo


def test_calibration_report_keys():
    z, y = torch.randn(50, 4), torch.randint(0, 4, (50,))
    r = calibration_report(z, y, z, y)
    assert set(r) == {'acc', 'nll', 'ece', 'T_fit', 'nll_ts', 'ece_ts'} and r['nll_ts'] <= r['nll'] + 1e-6


def test_data_are_the_dml_chapters_splits_without_importing_it():
    from kdnotes.dml import dml_data  # the splits the committed runs were made with
    (mine, aug, shape), (theirs, aug2, shape2) = tfkd_data('mnist5k', 20), dml_data('mnist5k', 20)
    assert shape == shape2 and aug == aug2
    for k in ('train', 'val', 'test'):
        assert torch.equal(mine[k].x, theirs[k].x) and torch.equal(mine[k].y, theirs[k].y)
    code = 'import sys, kdnotes.tfkd; assert "kdnotes.dml" not in sys.modules'
    assert subprocess.run([sys.executable, '-c', code]).returncode == 0
    with pytest.raises(ValueError, match="choose one of"): tfkd_data('svhn')


def test_lowres_downscales_and_refuses_upscaling():
    net = nn.Sequential(nn.Flatten(), nn.Linear(49, 3))
    x = torch.rand(2, 1, 28, 28)
    assert torch.allclose(LowRes(net, 7)(x), net(F.avg_pool2d(x, 4)), atol=1e-6)
    with pytest.raises(ValueError, match='only downscales'): LowRes(net, 7)(torch.rand(1, 1, 5, 5))
    assert LowRes(LeNet5(in_shape=(1, 14, 14)), 14)(x).shape == (2, 10)


def test_grids():
    assert len(tfkd_configs()) == 3 * len(TFKD_METHODS) and len(crossq_configs()) == 3 * len(CROSSQ_METHODS)
    with pytest.raises(ValueError, match='choose one of'): tfkd_run(TfKDConfig('virtual'))


@pytest.mark.parametrize('cmd', [['tfkd', '--methods', 'ce', 'tfkd_virtual_naive'], ['crossq']])
def test_cli_smoke(tmp_path, cmd):
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers())
    args = parser.parse_args(cmd + ['--seeds', '0', '--epochs', '1', '--train-per-class', '5', '--out', str(tmp_path)])
    args.func(args)
    summary = json.loads((tmp_path / f'{cmd[0]}_summary.json').read_text())
    assert len(summary) == (2 if cmd[0] == 'tfkd' else 3)
    assert (tmp_path / f'{cmd[0]}.png').stat().st_size > 0


def _official_by_hand(z, y, a, T, alpha, multiplier):
    "The published Tf-KD_reg, written the way the authors' code computes it (nn.KLDivLoss with its default reduction)."
    K = z.shape[1]
    soft = torch.ones_like(z) * (1 - a) / (K - 1)
    for i in range(len(y)): soft[i, y[i]] = a
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # 'mean' divides by N·K: that is the point
        kl = nn.KLDivLoss()(F.log_softmax(z, dim=1), F.softmax(soft / T, dim=1))
    return (1 - alpha) * F.cross_entropy(z, y) + alpha * kl * multiplier


@pytest.mark.parametrize('a, T, alpha, m, K', [(0.99, 20.0, 0.1, 100.0, 10), (0.99, 40.0, 0.95, 1.0, 100), (0.9, 10.0, 0.5, 7.0, 5)])
def test_tfkd_reg_official_matches_the_authors_formula(a, T, alpha, m, K):
    torch.manual_seed(0)
    z, y = torch.randn(16, K) * 3, torch.randint(0, K, (16,))
    assert torch.allclose(tfkd_reg_official_loss(a, T, alpha, m)(z, None, y), _official_by_hand(z, y, a, T, alpha, m), atol=1e-5)


def test_tfkd_reg_is_label_smoothing():
    torch.manual_seed(1)
    z, y = torch.randn(32, 10) * 2, torch.randint(0, 10, (32,))
    za, zb = z.clone().requires_grad_(), z.clone().requires_grad_()
    tfkd_reg_official_loss()(za, None, y).backward()
    t, c, eps = tfkd_reg_effective_target(10)
    F.cross_entropy(zb, y, label_smoothing=eps).backward()
    assert torch.allclose(za.grad, c * zb.grad, atol=1e-6) and abs(t.sum() - 1) < 1e-6
    assert abs(tfkd_reg_effective_target(100)[2] - 0.1) < 1e-3  # the authors' ResNet-18 CIFAR-100 setting: LS with eps 0.1


@pytest.mark.parametrize('kw, msg', [(dict(T=0.0), 'T must be'), (dict(alpha=2.0), 'alpha must be'),
                                     (dict(multiplier=-1.0), 'multiplier must be'), (dict(a=1.0), 'a must be in')])
def test_tfkd_reg_official_bad_settings(kw, msg):
    with pytest.raises(ValueError, match=msg): tfkd_reg_official_loss(**kw)


def test_fit_temperature_bad_interval():
    z, y = torch.randn(8, 3), torch.randint(0, 3, (8,))
    with pytest.raises(ValueError, match=r'lo \(the smallest temperature searched\) must be a finite number > 0'): fit_temperature(z, y, lo=0)
    with pytest.raises(ValueError, match='hi .* must be a finite number > 5'): fit_temperature(z, y, lo=5.0, hi=2.0)
    with pytest.raises(ValueError, match='iters must be'): fit_temperature(z, y, iters=0)


@pytest.mark.parametrize('make, msg', [(lambda: TfKDConfig(seed=-1), 'seed must be'), (lambda: TfKDConfig(model='vgg'), "unknown model 'vgg'"),
                                       (lambda: TfKDConfig(T_virtual=0), 'T_virtual must be'), (lambda: TfKDConfig(a=0.05), 'a must be in'),
                                       (lambda: TfKDRegConfig(method='ce'), 'choose one of'), (lambda: TfKDRegConfig(T=-1.0), 'T must be'),
                                       (lambda: CrossQConfig(size=40), r'size must be a whole number in \[12, 28\]'),
                                       (lambda: CrossQConfig(alpha=1.5), 'alpha must be'), (lambda: tfkd_reg_configs(()), 'non-empty'),
                                       (lambda: tfkd_table([]), 'no Tf-KD records')])
def test_configs_check_themselves(make, msg):
    with pytest.raises(ValueError, match=msg): make()


@pytest.mark.parametrize('argv, msg', [(['tfkd', '--epochs', '-1'], 'argument --epochs: expected an integer >= 1, got -1'),
                                       (['tfkd', '--seeds', '-1'], 'argument --seeds: expected an integer >= 0'),
                                       (['tfkd', '--train-per-class', '0'], 'argument --train-per-class: expected an integer >= 1'),
                                       (['tfkd', '--methods', 'trap'], "invalid choice: 'trap'"),
                                       (['crossq', '--size', 'eight'], "argument --size: expected an integer >= 1")])
def test_cli_refuses_bad_options_before_any_work(tmp_path, capsys, argv, msg):
    with pytest.raises(SystemExit) as e: main([*argv, '--out', str(tmp_path)])
    assert e.value.code == 2 and msg in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize('argv, msg', [(['crossq', '--size', '40'], 'size must be a whole number in [12, 28]'),
                                       (['crossq', '--size', '8'], 'size must be a whole number in [12, 28]'),
                                       (['tfkd', '--seeds', '1', '1'], 'give each seed once')])
def test_cli_config_errors_are_one_line_before_any_work(tmp_path, capsys, argv, msg):
    assert main([*argv, '--epochs', '1', '--out', str(tmp_path)]) == 2
    assert msg in capsys.readouterr().err and not list(tmp_path.iterdir())


def test_cli_runs_the_published_loss(tmp_path):
    assert main(['tfkd', '--methods', 'tfkd_reg_official', '--seeds', '0', '--epochs', '1', '--train-per-class', '5', '--out', str(tmp_path)]) == 0
    summary = json.loads((tmp_path / 'tfkd_summary.json').read_text())
    assert [r['method'] for r in summary] == ['tfkd_reg_official (m=100)', 'tfkd_reg_official (m=10)']
    assert len(list(tmp_path.glob('tfkd_reg-*.json'))) == 2 and not list(tmp_path.glob('*.tmp*'))
