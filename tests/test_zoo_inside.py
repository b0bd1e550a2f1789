"Edge cases of kdnotes.zoo_inside (FitNets, relational KD) and a one-epoch bench run of each method."
import itertools
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from kdnotes.distill import get_method, kd_loss
from kdnotes.kdbench import KDBenchConfig, kdbench_sweep, kdbench_table
from kdnotes.zoo_inside import (fitnet_hint_loss, rkd_distance, rkd_angle, rkd_loss, FitNet, RKD,
                                inside_configs, inside_methods, INSIDE_LABELS)

torch.set_num_threads(1)
TINY = KDBenchConfig(teacher_epochs=1, epochs=1, teacher_kwargs=dict(hidden=[512, 512], dropout=0.0))


def _emb(seed=0, n=6, ds=4, dt=9):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, ds, generator=g), torch.randn(n, dt, generator=g)


def test_hint_loss_formula():
    g = torch.Generator().manual_seed(1)
    v, u = torch.randn(4, 16, generator=g), torch.randn(4, 512, generator=g)
    reg = nn.Linear(16, 512)
    expected = 0.5 * ((u - reg(v)) ** 2).sum() / 4  # ½‖u − r(v)‖² per example, batch mean
    assert torch.allclose(fitnet_hint_loss(v, u, reg), expected, atol=1e-4)
    with pytest.raises(ValueError, match="hint's width"):
        fitnet_hint_loss(v, u[:, :100], reg)


def test_hint_loss_trains_only_guided_side():
    v = torch.randn(8, 16, requires_grad=True)
    u = torch.randn(8, 512).relu()
    reg = nn.Sequential(nn.Linear(16, 512), nn.ReLU())
    fitnet_hint_loss(v, u, reg).backward()
    assert v.grad.abs().sum() > 0 and reg[0].weight.grad.abs().sum() > 0


def test_fitnet_stages():
    m = FitNet(hint_steps=1, beta=0.1)
    zs, zt, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
    fs, ft = {'net.2': torch.randn(8, 16)}, {'net.2': torch.randn(8, 512)}
    hint = fitnet_hint_loss(fs['net.2'], ft['net.2'], m.regressor)
    assert torch.allclose(m(zs, zt, y, fs, ft), 0.1 * hint, atol=1e-5)  # stage 1
    assert torch.allclose(m(zs, zt, y, fs, ft), kd_loss(zs, zt, y, 2.0, 0.1), atol=1e-5)  # stage 2: KD
    assert any(True for _ in m.parameters())  # the regressor trains with the student (Distiller)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_rkd_invariances(seed):
    s, t = _emb(seed)
    Q = torch.linalg.qr(torch.randn(9, 9))[0]
    base = rkd_loss(s, t)
    assert torch.allclose(rkd_loss(s, t @ Q + 5.0), base, atol=1e-4)  # rotation + translation
    assert torch.allclose(rkd_loss(s, 10.0 * t, w_angle=0.0), rkd_loss(s, t, w_angle=0.0), atol=1e-5)
    assert torch.allclose(rkd_loss(s, 10.0 * t, w_dist=0.0), rkd_loss(s, t, w_dist=0.0), atol=1e-5)
    assert rkd_loss(2.0 * t @ Q - 1.0, t) < 1e-6  # a similar copy: no loss


def test_rkd_angle_naive():
    s, t = _emb(3, n=4)
    def cos(p, i, j, k):
        if i == j or i == k: return torch.tensor(0.0)
        a, b = p[j] - p[i], p[k] - p[i]
        return a @ b / (a.norm() * b.norm())
    idx = list(itertools.product(range(4), repeat=3))
    naive = torch.stack([F.smooth_l1_loss(cos(s, *ijk), cos(t, *ijk)) for ijk in idx]).mean()
    assert torch.allclose(rkd_loss(s, t, w_dist=0.0, w_angle=1.0), naive, atol=1e-5)
    assert rkd_angle(t).shape == (4, 4, 4)
    d = rkd_distance(t)
    assert torch.allclose(d[~torch.eye(4, dtype=torch.bool)].mean(), torch.tensor(1.0), atol=1e-6)


def test_rkd_bad_input():
    s, t = _emb()
    with pytest.raises(ValueError, match='at least 3'):
        rkd_loss(s[:2], t[:2])
    with pytest.raises(ValueError, match='at least 3'):
        rkd_loss(s, t[:5])
    with pytest.raises(ValueError, match='>= 0'):
        RKD(w_angle=-1.0)


def test_configs_and_registry():
    assert isinstance(get_method('fitnet'), FitNet) and isinstance(get_method('rkd'), RKD)
    labels = [c.method_kwargs.get('label', c.method) for c in inside_configs(seeds=[0])]
    assert labels == list(INSIDE_LABELS)
    with pytest.raises(ValueError, match='stage 2 needs steps'):
        inside_methods(hint_fraction=1.0)


def test_bench_smoke(tmp_path):
    recs = kdbench_sweep(inside_configs(['fitnet', 'rkd_kd'], seeds=[0], base=TINY), tmp_path, progress=False)
    table = kdbench_table(recs)
    assert table['method'].tolist() == ['fitnet', 'rkd_kd']
    assert (table['acc_mean'] > 0.1).all()
