"`kdnotes hinton` end to end: the sweep, the no-3s run, resuming, bad options (unit tests: nbs/10_hinton_kd)."
import argparse, json
from pathlib import Path

import pytest
from kdnotes.experiments import ResultStore
from kdnotes.cli import main
from kdnotes.hinton import add_cli


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
