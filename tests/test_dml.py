"Edge cases and a CLI smoke test for kdnotes.dml (Deep Mutual Learning)."
import argparse, json, math
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from kdnotes.dml import (dml_loss, cohort_loss, CohortConfig, fit_cohort, train_cohort, cohort_metrics, DMLConfig,
                         dml_configs, dml_data, add_cli, DML_METHODS, dml_table)
from kdnotes.metrics import prediction_entropy, ece
from kdnotes.models import mean_probs_logits
from kdnotes.cli import main
from kdnotes.data import Split, DeviceLoader
from kdnotes.train import TrainConfig
from kdnotes.models import LeNet5

torch.set_num_threads(1)


def _naive(zs, y, k):
    pk = zs[k].softmax(1)
    kl = sum((zs[j].softmax(1) * (zs[j].softmax(1).log() - pk.log())).sum(1).mean() for j in range(len(zs)) if j != k) / (len(zs) - 1)
    return F.cross_entropy(zs[k], y) + kl


def test_dml_loss_matches_naive_formula():
    torch.manual_seed(0)
    zs, y = [torch.randn(8, 5) * s for s in (1, 2, 3, 4)], torch.randint(0, 5, (8,))
    for k, l in enumerate(dml_loss(zs, y)): assert torch.allclose(l, _naive(zs, y, k), atol=1e-5)


def test_peers_are_detached():
    zs = [torch.randn(4, 3, requires_grad=True) for _ in range(3)]
    dml_loss(zs, torch.tensor([0, 1, 2, 0]))[0].backward()
    assert zs[0].grad is not None and zs[1].grad is None and zs[2].grad is None


def test_dml_e_is_kl_to_mixture_and_equals_dml_for_two():
    torch.manual_seed(1)
    zs, y = [torch.randn(6, 4) for _ in range(3)], torch.randint(0, 4, (6,))
    mix = (zs[0].softmax(1) + zs[2].softmax(1)) / 2
    want = F.cross_entropy(zs[1], y) + (mix * (mix.log() - zs[1].log_softmax(1))).sum(1).mean()
    assert torch.allclose(dml_loss(zs, y, ensemble=True)[1], want, atol=1e-5)
    for a, b in zip(dml_loss(zs[:2], y), dml_loss(zs[:2], y, ensemble=True)): assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize('bad, msg', [(dict(weight=-0.5), '>= 0')])
def test_dml_loss_bad_inputs(bad, msg):
    zs, y = [torch.randn(4, 3), torch.randn(4, 3)], torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match=msg): dml_loss(zs, y, **bad)
    with pytest.raises(ValueError, match='at least 2'): dml_loss(zs[:1], y)
    with pytest.raises(ValueError, match='same classes'): dml_loss([zs[0], torch.randn(4, 7)], y)


def test_cohort_loss_validation():
    with pytest.raises(ValueError, match='choose one of'): cohort_loss(CohortConfig('peer'))
    with pytest.raises(ValueError, match='needs a teacher'): cohort_loss(CohortConfig('kd'))


def test_entropy_and_metrics():
    assert math.isclose(prediction_entropy(torch.zeros(2, 4)), math.log(4), rel_tol=1e-6)
    z, y = torch.tensor([[5., 0.], [0., 5.]]), torch.tensor([0, 1])
    m = cohort_metrics([z, z.clone()], y)
    assert m['acc'] == 1.0 and m['agreement'] == 1.0 and m['ens_acc'] == 1.0


def test_cohort_ensemble_is_the_mixture_bit_for_bit():
    torch.manual_seed(2)
    zs, y = [torch.randn(30, 4) * 3 for _ in range(3)], torch.randint(0, 4, (30,))
    # the expression the committed runs were made with, before mean_probs_logits existed
    old = torch.logsumexp(torch.stack([z.log_softmax(-1) for z in zs]), 0) - math.log(len(zs))
    assert torch.equal(mean_probs_logits(zs), old)
    assert cohort_metrics(zs, y)['ens_ece'] == ece(old, y)
    mix = sum(z.softmax(-1) for z in zs) / 3
    assert torch.allclose(mean_probs_logits(zs).exp(), mix, atol=1e-6)


@pytest.mark.parametrize('alternate', [False, True])
def test_fit_cohort_runs_and_independent_students_differ(alternate):
    torch.manual_seed(0)
    data = Split(torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,)))
    models = [LeNet5(), LeNet5()]
    before = [m.classifier[-1].weight.clone() for m in models]
    h = train_cohort(models, data, CohortConfig('dml', alternate=alternate, train=TrainConfig(epochs=2, batch_size=32, progress=False, device='cpu')))
    assert len(h) == 2 and len(h[0]['loss']) == 2 and len(h[0]['ce']) == 2
    assert all(not torch.equal(b, m.classifier[-1].weight) for b, m in zip(before, models))


def test_train_cohort_checks_k():
    data = Split(torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,)))
    with pytest.raises(ValueError, match='build cfg.k students'): train_cohort([LeNet5()], data, CohortConfig(k=2))


def test_grid_and_data():
    g = dml_configs(seeds=(0, 1, 2))
    assert len(g) == 15 and {c.method for c in g} == set(DML_METHODS)
    assert all(c.k == 3 for c in g if c.method == 'dml_e')
    with pytest.raises(ValueError, match="choose one of \\('mnist5k', 'cifar10'\\)"): dml_data('svhn')


def test_cli_smoke(tmp_path):
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers())
    args = parser.parse_args(['dml', '--methods', 'independent', 'kd', '--seeds', '0', '--epochs', '1', '--train-per-class', '5', '--out', str(tmp_path)])
    args.func(args)
    summary = json.loads((tmp_path / 'dml_summary.json').read_text())
    assert {r['method'] for r in summary} == {'independent', 'kd'}
    assert (tmp_path / 'dml.png').stat().st_size > 0 and (tmp_path / 'dml_loss_curves.png').exists()
    assert len(list(tmp_path.glob('dml-*.json'))) == 2 and not list(tmp_path.glob('*.tmp*'))


def test_dml_loss_checks_every_student_and_the_labels():
    zs, y = [torch.randn(4, 3) for _ in range(3)], torch.tensor([0, 1, 2, -1])
    bad = zs[:2] + [torch.full((4, 3), float('nan'))]
    with pytest.raises(ValueError, match='student 2 logits contain NaN'): dml_loss(bad, y)
    with pytest.raises(ValueError, match='same classes'): dml_loss(zs[:2] + [torch.randn(4, 5)], y)
    with pytest.raises(ValueError, match=r'labels must be \(N,\)'): dml_loss(zs, y[:3])
    with pytest.raises(ValueError, match=r'\[0, 3\)'): dml_loss(zs, torch.tensor([0, 1, 3, 0]))
    with pytest.raises(ValueError, match='T must be'): dml_loss(zs, y, T=-1.0)


@pytest.mark.parametrize('bad, msg', [(dict(method='mutual'), 'choose one of'), (dict(seed=-1), 'seed must be'), (dict(k=1), 'k must be'),
                                      (dict(train_per_class=0), 'train_per_class must be'), (dict(student='vgg'), "unknown student 'vgg'"),
                                      (dict(T=0.0), 'T must be'), (dict(dataset='svhn'), 'unknown dataset')])
def test_dml_experiment_checks_itself(bad, msg):
    with pytest.raises(ValueError, match=msg): DMLConfig(**bad)


def test_configs_refuse_untrainable_settings():
    train = TrainConfig(epochs=1)
    train.epochs = -1  # changed after it was built: the experiment checks again
    with pytest.raises(ValueError, match='epochs must be'): DMLConfig(train=train)
    with pytest.raises(ValueError, match='epochs must be'): CohortConfig(train=train)
    with pytest.raises(ValueError, match='no DML records'): dml_table([])
    with pytest.raises(ValueError, match='give each seed once'): dml_configs((0, 0))


@pytest.mark.parametrize('argv, msg', [(['--epochs', '-1'], 'argument --epochs: expected an integer >= 1, got -1'),
                                       (['--epochs', '0'], 'argument --epochs: expected an integer >= 1'),
                                       (['--lr', '0'], 'argument --lr: expected a finite number > 0'),
                                       (['--batch-size', '0'], 'argument --batch-size: expected an integer >= 1'),
                                       (['--seeds', '-2'], 'argument --seeds: expected an integer >= 0'),
                                       (['--train-per-class', 'ten'], "argument --train-per-class: expected an integer >= 1, got 'ten'"),
                                       (['--methods', 'mutual'], "invalid choice: 'mutual'")])
def test_cli_refuses_bad_options_before_any_work(tmp_path, capsys, argv, msg):
    with pytest.raises(SystemExit) as e: main(['dml', *argv, '--out', str(tmp_path)])
    assert e.value.code == 2 and msg in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing stored, nothing half-written


def test_cli_config_errors_are_one_line_before_any_work(tmp_path, capsys):
    assert main(['dml', '--seeds', '0', '0', '--epochs', '1', '--out', str(tmp_path)]) == 2
    assert 'give each seed once' in capsys.readouterr().err and not list(tmp_path.iterdir())
    # --k parses as an integer >= 1; DMLConfig refuses a cohort of one, still before any run
    assert main(['dml', '--k', '1', '--out', str(tmp_path)]) == 2
    assert 'k must be a whole number >= 2, got 1' in capsys.readouterr().err and not list(tmp_path.iterdir())
    f = tmp_path / 'afile'
    f.write_text('x')
    assert main(['dml', '--out', str(f)]) == 2 and 'is a file' in capsys.readouterr().err
