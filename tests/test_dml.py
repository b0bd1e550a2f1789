"`kdnotes dml` end to end: a one-epoch run; bad options and configs refused first (unit tests: nbs/12_dml)."
import argparse, json
import pytest
import torch
from kdnotes.dml import add_cli
from kdnotes.cli import main

torch.set_num_threads(1)


def test_cli_smoke(tmp_path):
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers())
    args = parser.parse_args(['dml', '--methods', 'independent', 'kd', '--seeds', '0', '--epochs', '1', '--train-per-class', '5', '--out', str(tmp_path)])
    args.func(args)
    summary = json.loads((tmp_path / 'dml_summary.json').read_text())
    assert {r['method'] for r in summary} == {'independent', 'kd'}
    assert (tmp_path / 'dml.png').stat().st_size > 0 and (tmp_path / 'dml_loss_curves.png').exists()
    assert len(list(tmp_path.glob('dml-*.json'))) == 2 and not list(tmp_path.glob('*.tmp*'))


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
