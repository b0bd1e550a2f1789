"`kdnotes tfkd` and `kdnotes crossq` end to end; the splits shared with chapter 12 (unit tests: nbs/13_tfkd)."
import argparse, json
import subprocess, sys
import pytest
import torch
from kdnotes.tfkd import add_cli, tfkd_data
from kdnotes.cli import main

torch.set_num_threads(1)


def test_data_are_the_dml_chapters_splits_without_importing_it():
    from kdnotes.dml import dml_data  # the splits the committed runs were made with
    (mine, aug, shape), (theirs, aug2, shape2) = tfkd_data('mnist5k', 20), dml_data('mnist5k', 20)
    assert shape == shape2 and aug == aug2
    for k in ('train', 'val', 'test'):
        assert torch.equal(mine[k].x, theirs[k].x) and torch.equal(mine[k].y, theirs[k].y)
    code = 'import sys, kdnotes.tfkd; assert "kdnotes.dml" not in sys.modules'
    assert subprocess.run([sys.executable, '-c', code]).returncode == 0
    with pytest.raises(ValueError, match="choose one of"): tfkd_data('svhn')


@pytest.mark.parametrize('cmd', [['tfkd', '--methods', 'ce', 'tfkd_virtual_naive'], ['crossq']])
def test_cli_smoke(tmp_path, cmd):
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers())
    args = parser.parse_args(cmd + ['--seeds', '0', '--epochs', '1', '--train-per-class', '5', '--out', str(tmp_path)])
    args.func(args)
    summary = json.loads((tmp_path / f'{cmd[0]}_summary.json').read_text())
    assert len(summary) == (2 if cmd[0] == 'tfkd' else 3)
    assert (tmp_path / f'{cmd[0]}.png').stat().st_size > 0


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
