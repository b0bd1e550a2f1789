"""`kdnotes fidelity` (the main job) end to end at tiny scale: table, figure, resuming, bad options, folders.
Unit tests live in nbs/11_fidelity.ipynb."""
import json
import os
from pathlib import Path

import pytest

from kdnotes.cli import main


def test_cli_writes_table_and_figure_and_resumes(tmp_path, capsys):
    args = ['fidelity', '--sizes', '64', '128', '--seeds', '0', '--steps', '10', '--teacher-epochs', '2', '--device', 'cpu', '--out', str(tmp_path)]
    assert main(args) == 0
    report = json.loads((tmp_path / 'fidelity.json').read_text())
    assert (tmp_path / 'fidelity.png').stat().st_size > 10_000
    assert [r['size'] for r in report['table']] == [64, 128]
    assert {'device', 'torch', 'git_commit', 'wall_seconds'} <= set(report['provenance'])
    assert len(report['runs']) == 2 and all(0 <= r['result']['agreement'] <= 1 for r in report['runs'])
    out = capsys.readouterr().out
    assert 'control_agreement' in out and ' ± ' in out and 'mean ± std over seeds [0]' in out
    # a second call finds both runs stored and trains nothing
    assert main(args) == 0
    captured = capsys.readouterr()
    assert '2 of 2 runs already in' in captured.out + captured.err


def exit_status(argv) -> int:
    "main's exit status, whether argparse exits (bad option syntax) or main returns."
    try: return main(argv)
    except SystemExit as e: return e.code


def nothing_written(folder) -> bool:
    return not any(list(folder.rglob(pattern)) for pattern in ('*.json', '*.pt', '*.png'))


def test_bad_inputs_name_the_fix(tmp_path, capsys):
    assert main(['fidelity', '--sizes', '100000', '--seeds', '0', '--teacher-epochs', '1', '--out', str(tmp_path)]) == 2
    assert 'size must be in 1..3800' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(['fidelity', '--dataset', 'imagenet'])
    # a bad size after good ones is still found before the first teacher trains
    assert main(['fidelity', '--sizes', '100', '5000', '--seeds', '0', '--out', str(tmp_path / 'late')]) == 2
    assert 'size must be in 1..3800' in capsys.readouterr().err and nothing_written(tmp_path / 'late')


@pytest.mark.parametrize('argv, msg', [
    (['--T', '0'], 'argument --T: expected a finite number > 0, got 0'),
    (['--T', 'hot'], "argument --T: expected a finite number > 0, got 'hot'"),
    (['--sizes', '-5'], 'argument --sizes: expected an integer >= 1'),
    (['--seeds', '-1'], 'argument --seeds: expected an integer >= 0'),
    (['--steps', '0'], 'argument --steps'), (['--teacher-epochs', '0'], 'argument --teacher-epochs'),
    (['--model', 'vgg99'], "argument --model: invalid choice: 'vgg99'")])
def test_bad_options_stop_at_parsing(tmp_path, capsys, argv, msg):
    assert exit_status(['fidelity', *argv, '--out', str(tmp_path / 'o')]) == 2
    assert msg in capsys.readouterr().err
    assert not (tmp_path / 'o').exists()  # nothing trained, nothing written


def test_unwritable_out_is_refused_before_training(tmp_path, capsys, monkeypatch):
    real = Path.write_text
    def deny(self, *a, **k):  # as root a read-only folder is still writable, so refuse the probe itself
        if self.name.startswith('.kdnotes-probe'): raise PermissionError(13, 'Permission denied', str(self))
        return real(self, *a, **k)
    monkeypatch.setattr(Path, 'write_text', deny)
    assert main(['fidelity', '--seeds', '0', '--out', str(tmp_path / 'ro')]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'cannot write to' in err and 'choose a writable folder with --out' in err
    assert nothing_written(tmp_path)
    monkeypatch.undo()
    (tmp_path / 'file').write_text('')
    store_is_file = ['--out', str(tmp_path / 'o'), '--store', str(tmp_path / 'file')]
    assert main(['fidelity', '--seeds', '0', *store_is_file]) == 2
    assert 'pass a folder to --store' in capsys.readouterr().err


@pytest.mark.skipif(getattr(os, 'geteuid', lambda: 0)() == 0, reason='root can write to a read-only folder')
def test_read_only_out(tmp_path, capsys):
    ro = tmp_path / 'ro'
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(['fidelity', '--seeds', '0', '--out', str(ro)]) == 2
        assert 'choose a writable folder with --out' in capsys.readouterr().err
    finally: ro.chmod(0o755)
