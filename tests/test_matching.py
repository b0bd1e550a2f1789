"""`kdnotes matching` end to end at tiny scale, through its command-line parser."""
import argparse
import json

import pytest
import torch

from kdnotes.matching import add_cli


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def run(argv) -> int:
    "Parse `argv` as `kdnotes matching ...` and run it; the exit status argparse would give."
    ap = argparse.ArgumentParser(prog='kdnotes')
    add_cli(ap.add_subparsers())
    try: args = ap.parse_args(['matching', *argv])
    except SystemExit as e: return e.code
    args.func(args)
    return 0


def test_cli_writes_table_and_figure_and_resumes(tmp_path, capsys):
    argv = ['--modes', 'fixed', 'function_matching', '--steps', '4', '--seeds', '0', '--size', '64',
            '--teacher-epochs', '2', '--device', 'cpu', '--out', str(tmp_path)]
    assert run(argv) == 0
    report = json.loads((tmp_path / 'matching.json').read_text())
    assert (tmp_path / 'matching.png').stat().st_size > 10_000
    assert sorted(r['mode'] for r in report['table']) == ['fixed', 'function_matching']
    assert {'device', 'torch', 'git_commit', 'wall_seconds'} <= set(report['provenance'])
    assert len(report['runs']) == 2 and all(0 <= r['result']['agreement'] <= 1 for r in report['runs'])
    out = capsys.readouterr().out
    assert 'control_agreement' in out and ' ± ' in out and 'mean ± std over seeds [0]' in out
    assert run(argv) == 0  # a second call finds both runs stored and trains nothing
    captured = capsys.readouterr()
    assert '2 of 2 runs already in' in captured.out + captured.err


@pytest.mark.parametrize('argv, msg', [
    (['--modes', 'cutmix'], "argument --modes: invalid choice: 'cutmix'"),
    (['--steps', '0'], 'argument --steps: expected an integer >= 1'),
    (['--seeds', '-1'], 'argument --seeds: expected an integer >= 0'),
    (['--dataset', 'svhn'], "argument --dataset: invalid choice: 'svhn'")])
def test_bad_options_stop_at_parsing(tmp_path, capsys, argv, msg):
    assert run([*argv, '--out', str(tmp_path / 'o')]) == 2
    assert msg in capsys.readouterr().err
    assert not (tmp_path / 'o').exists()


@pytest.mark.parametrize('argv, msg', [
    (['--seeds', '0', '0'], 'seeds repeats [0]: each value runs once'),
    (['--steps', '1'], 'steps=1 would train 16 steps'),
    (['--launcher', 'slurm'], None),  # checked against this machine: only where SLURM is missing
])
def test_bad_values_stop_before_any_run(tmp_path, argv, msg, monkeypatch):
    """Values argparse accepts but the job cannot honour stop with a ValueError naming the option, before any run."""
    if msg is None:
        monkeypatch.setenv('PATH', '')  # no sbatch, squeue or srun here
        msg = "--launcher slurm needs SLURM's sbatch, squeue, srun on PATH"
    with pytest.raises(ValueError, match=None) as e: run([*argv, '--out', str(tmp_path / 'o')])
    assert msg in str(e.value)
    assert not (tmp_path / 'o' / 'matching-runs').exists()


def test_empty_out_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match='--out is empty; name a folder'): run(['--out', ''])
    assert list(tmp_path.iterdir()) == []  # nothing written into the current folder
