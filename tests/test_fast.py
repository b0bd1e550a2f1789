"""`kdnotes bench` end to end and the lent-GPU driver tools/gpu_task.py. Unit tests: nbs/20_fast.ipynb and
nbs/09_packing.ipynb."""
import argparse, json
import pytest
import torch
from kdnotes.fast import add_cli

torch.set_num_threads(1)  # shared CPU; also avoids OpenMP spinning


def test_cli_bench_tiny(tmp_path, capsys):
    ap = argparse.ArgumentParser(prog='kdnotes'); sub = ap.add_subparsers()
    add_cli(sub)
    args = ap.parse_args(['speed', '--dataset', 'fake', '--model', 'resnet20', '--device', 'cpu', '--images', '32', '--test-images', '16',
                          '--batch-size', '32', '--base-batch', '16', '--workers', '0', '--k', '2', '--repeats', '1',
                          '--epochs', '1', '--seeds', '1', '--full-epochs', '1', '--out', str(tmp_path)])
    res = args.func(args)
    assert set(res) == {'speed', 'packed', 'acc', 'full'}
    assert res['speed']['speedup'] > 0 and res['packed']['best'] in ('vmap', 'loop')
    names = sorted(p.name.split('-')[0] for p in tmp_path.iterdir())
    assert names == ['acc', 'bench', 'full', 'packed', 'speed']
    rec = json.loads(next(tmp_path.glob('speed-*.json')).read_text())
    assert {'device', 'torch', 'git_commit', 'wall_seconds'} <= set(rec['provenance']) and rec['config']['model'] == 'resnet20'
    out = capsys.readouterr().out
    assert 'speed-up' in out and 'images/s' in out


# ---- kdnotes.packing: not yet tested in nbs/09_packing.ipynb (another helper's notebook; to move there)
def _gpu_task():
    import importlib.util, sys
    from pathlib import Path

    p = Path(__file__).resolve().parents[1] / 'tools' / 'gpu_task.py'
    spec = importlib.util.spec_from_file_location('gpu_task', p)
    mod = importlib.util.module_from_spec(spec)
    sys.modules['gpu_task'] = mod
    spec.loader.exec_module(mod)
    return mod


def test_gpu_task_picks_the_first_unit_without_a_complete_record(tmp_path):
    gt = _gpu_task()
    assert gt.next_unit(tmp_path) == 'U1'
    (tmp_path / 'U1-aaa.json').write_text(json.dumps(dict(unit='U1', complete=True)))
    (tmp_path / 'U2-bbb.json').write_text(json.dumps(dict(unit='U2', complete=False)))  # killed: done again
    (tmp_path / 'U3-ccc.json').write_text('{not json')
    assert gt.done_units(tmp_path) == {'U1'} and gt.next_unit(tmp_path) == 'U2'
    for u in ('U2', 'U3', 'U4'):
        (tmp_path / f'{u}-x.json').write_text(json.dumps(dict(unit=u, complete=True)))
    assert gt.next_unit(tmp_path) is None


def test_gpu_task_saver_packs_every_record_as_it_goes(tmp_path):
    import tarfile

    gt = _gpu_task()
    s = gt.Saver(tmp_path / 'out', tmp_path / 'work')
    (tmp_path / 'out').mkdir()
    s.save('U2-abc.json', dict(pieces={'teachers': [1]}))
    s.save('probe-x.json', dict(ok=True))
    s.save(
        'U2-abc.json', dict(pieces={'teachers': [1], 'students': [2]})
    )  # a later piece replaces the record
    with tarfile.open(tmp_path / 'out' / 'results.tar') as tar:
        assert sorted(tar.getnames()) == ['nbs/results/gpu/U2-abc.json', 'nbs/results/gpu/probe-x.json']
        assert json.loads(tar.extractfile('nbs/results/gpu/U2-abc.json').read())['pieces']['students'] == [2]
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['results.tar']


def test_gpu_task_refuses_a_gpu_run_without_commit_or_gpu(tmp_path, monkeypatch):
    gt = _gpu_task()
    monkeypatch.delenv('KDNOTES_GIT_COMMIT', raising=False)
    assert gt.main(['--out', str(tmp_path)]) == 2  # no GPU here (and no commit): stops before any work
    assert (
        'no GPU visible' in (tmp_path / 'log.txt').read_text()
        or 'KDNOTES_GIT_COMMIT' in (tmp_path / 'log.txt').read_text()
    )
    with pytest.raises(SystemExit):
        gt.main(['--unit', 'U9', '--out', str(tmp_path)])
    monkeypatch.setenv('KDNOTES_GIT_COMMIT', 'abc123')
    assert gt.commit() == 'abc123'
