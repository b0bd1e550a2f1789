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
