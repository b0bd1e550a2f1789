"`kdnotes synth` then `kdnotes cifar` end to end (digits, resnet8), resuming; bad options (unit: nbs/22)."
import argparse, contextlib, io, json
import pytest, torch
from kdnotes.experiments import ResultStore
from kdnotes.synthetic import add_cli as add_synth_cli
from kdnotes.cifar import add_controls, add_cli
from kdnotes.cifar_figures import plot_self_distill, plot_ensemble

@pytest.fixture(autouse=True, scope='module')
def one_thread():
    n = torch.get_num_threads(); torch.set_num_threads(1); yield; torch.set_num_threads(n)

def parser():
    ap = argparse.ArgumentParser(prog='kdnotes'); sub = ap.add_subparsers(); add_cli(sub); add_synth_cli(sub)
    return ap

def test_end_to_end_cli(tmp_path):
    "DDPM on digits -> samples -> self-distillation sweep with controls -> ensemble sweep -> summaries and figures; resumable."
    ap, out, runs = parser(), str(tmp_path / 'res'), str(tmp_path / 'runs')
    a = ap.parse_args(['synth', '--dataset', 'digits', '--time-budget', '1', '--n', '40', '--steps', '2', '--channels', '8', '16',
                       '--layers', '1', '--no-attention', '--device', 'cpu', '--runs', runs, '--out', out])
    syn = a.func(a)
    argv = ['cifar', 'self', '--preset', 'tiny', '--epochs', '1', '--n-synth', '0', '40', '--n-teachers', '1', '--seeds', '0', '1',
            '--synth', syn['path'], '--device', 'cpu', '--out', out, '--ckpt-dir', runs]
    first = ap.parse_args(argv + ['--max-runs', '1']); r1 = first.func(first)
    assert (r1['ran'], r1['remaining']) == (1, 3)  # a --max-runs command stops early ...
    r2 = ap.parse_args(argv); r2 = r2.func(r2)
    assert (r2['ran'], r2['remaining']) == (3, 0)  # ... and the next one resumes
    summ = json.loads((tmp_path / 'res' / 'summary-self.json').read_text())
    assert summ['n_runs'] == 4 and {row['n_synth'] for row in summ['table']} == {0, 40}
    assert all(row['n'] == 2 and row['control_agreement_mean'] == row['control_agreement_mean'] for row in summ['table'])  # 2 seeds, controls not NaN
    assert (tmp_path / 'res' / 'fig-self.png').exists()
    recs = ResultStore(out).records('student'); assert all('provenance' in rec for rec in recs)
    assert {rec['config']['synth_id'] for rec in recs} == {'', syn['id']}
    e = ap.parse_args(['cifar', 'ensemble', '--preset', 'tiny', '--epochs', '1', '--sizes', '1', '2', '--seeds', '0', '1', '--device', 'cpu',
                       '--out', out, '--ckpt-dir', runs])
    re_ = e.func(e); assert (re_['ran'], re_['remaining']) == (2, 0)  # size 1 was already run by the self sweep
    assert (tmp_path / 'res' / 'fig-ensemble.png').exists()
    plot_ensemble(add_controls(ResultStore(out).records('student'))); plot_self_distill(add_controls(recs))


def test_cli_needs_synth_for_synthetic_sizes(tmp_path):
    ap = parser()
    a = ap.parse_args(['cifar', 'self', '--preset', 'tiny', '--epochs', '1', '--seeds', '0', '--device', 'cpu', '--out', str(tmp_path)])
    with pytest.raises(ValueError, match='synth_id'): a.func(a)


def test_cli_fails_fast_on_bad_options(tmp_path):
    ap, out = parser(), str(tmp_path / 'res')
    base = [
        'cifar',
        'self',
        '--preset',
        'tiny',
        '--epochs',
        '1',
        '--device',
        'cpu',
        '--out',
        out,
        '--ckpt-dir',
        str(tmp_path / 'runs'),
    ]
    bad_file = tmp_path / 'notes.txt'
    bad_file.write_text('not a tensor file')
    small = tmp_path / 'small.pt'
    from kdnotes.train import save_samples

    save_samples(small, torch.zeros(10, 1, 8, 8, dtype=torch.uint8), id='small')
    for extra, msg in (
        (['--synth', str(bad_file)], 'notes.txt is not a sample file'),
        (['--synth', str(small), '--n-synth', '0', '40'], 'sample file has 10'),
        (['--launcher', 'local', '--max-runs', '1'], "budget one machine's serial sweep"),
    ):
        a = ap.parse_args(base + extra)
        with pytest.raises(ValueError, match=msg):
            a.func(a)
    for extra, msg in ((['--seeds', '0', 'x'], "argument --seeds: expected an integer >= 0, got 'x'"),
                       (['--time-budget', '0'], 'argument --time-budget: expected a finite number > 0'),
                       (['--max-runs', '0'], 'argument --max-runs: expected an integer >= 1')):
        err = io.StringIO()  # argparse refuses these itself, naming the option
        with contextlib.redirect_stderr(err), pytest.raises(SystemExit): ap.parse_args(base + extra)
        assert msg in err.getvalue(), err.getvalue()
    assert (
        not (tmp_path / 'runs').exists() and not (tmp_path / 'res').exists()
    )  # nothing trained, nothing written
