"""The main job end to end at tiny scale, through the command line."""
import json

import pytest
import torch

from kdnotes.cli import main
from kdnotes.fidelity import FidelityConfig, fidelity_run, fidelity_data, mixup_transform


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


def test_bad_inputs_name_the_fix(tmp_path, capsys):
    assert main(['fidelity', '--sizes', '100000', '--seeds', '0', '--teacher-epochs', '1', '--out', str(tmp_path)]) == 2
    assert 'size must be in' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(['fidelity', '--dataset', 'imagenet'])
    # checked before any training: nothing is written to the store
    assert main(['fidelity', '--T', '0', '--seeds', '0', '--out', str(tmp_path / 'bad_T')]) == 2
    assert 'T must be > 0' in capsys.readouterr().err
    assert not list((tmp_path / 'bad_T').rglob('*.json')) and not list((tmp_path / 'bad_T').rglob('*.pt'))


def test_extra_images_enter_the_distillation_set(tmp_path):
    extra = torch.rand(40, 1, 28, 28)
    torch.save(extra, tmp_path / 'extra.pt')
    res = fidelity_run(FidelityConfig(size=32, steps=5, seed=0, teacher_epochs=1, extra_path=str(tmp_path / 'extra.pt'), n_extra=40, device='cpu'))
    assert 0 <= res['train_agreement'] <= 1


def test_mixup_is_a_convex_combination():
    x = torch.rand(8, 1, 4, 4)
    xm, _ = mixup_transform(x, torch.zeros(8, dtype=torch.long), torch.Generator().manual_seed(0))
    assert xm.min() >= x.min() - 1e-6 and xm.max() <= x.max() + 1e-6


def test_splits_are_disjoint():
    splits, _ = fidelity_data(FidelityConfig(seed=3))
    seen = [set(map(bytes, s.x.flatten(1).numpy())) for s in splits.values()]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
