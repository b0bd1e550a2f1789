"Edge cases of chapter 15's methods (kdnotes.methods: FitNets, RKD, BYOT, Sobolev, SSKD), rows, runs, tables."
import itertools, json
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from kdnotes.distill import get_method, kd_loss, capture_features, MethodInputs
from kdnotes.kdbench import KDBenchConfig, kdbench_sweep, kdbench_table, build_model
from kdnotes.methods.fitnet import fitnet_hint_loss, FitNet
from kdnotes.methods.rkd import rkd_distance, rkd_angle, rkd_loss, RKD
from kdnotes.methods.byot import byot_loss, BYOT
from kdnotes.methods.sobolev import directional_derivative, unit_directions, sobolev_loss, Sobolev
from kdnotes.methods.sskd import rotate_copies, similarity, keep_rows, sskd_ss_loss, SSKD
from kdnotes.zoo_inside import (inside_configs, inside_rows, ExitsView, byot_exits_sweep, paired_family,
                                row_refs, row_setting)

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
    assert m.student_layers == m.teacher_layers == ('stage1',) and m.regressor is None  # built by setup
    student, teacher = (build_model('mlp', dict(hidden=h), (1, 28, 28)) for h in ([16], [512, 512]))
    m.setup(student, teacher)
    assert m.regressor[0].weight.shape == (512, 16)  # the widths of both networks' 'stage1' (net.2)
    zs, zt, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
    fs, ft = {'stage1': torch.randn(8, 16)}, {'stage1': torch.randn(8, 512)}
    hint = fitnet_hint_loss(fs['stage1'], ft['stage1'], m.regressor)
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
    cfgs = {c.label: c for c in inside_configs(seeds=[0])}
    assert list(cfgs) == [r.label for r in inside_rows()] and list(cfgs)[:2] == ['labels', 'kd']
    assert all('label' not in c.method_kwargs for c in cfgs.values())
    assert {c.chapter for label, c in cfgs.items() if label not in ('labels', 'kd')} == {'15 zoo II'}
    for name in ('fitnet', 'rkd', 'byot', 'sobolev', 'sskd'):  # registered by kdnotes.methods alone
        assert get_method(name).chapter == '15 zoo II'
        assert type(get_method(name)).__module__ == f'kdnotes.methods.{name}'
    with pytest.raises(ValueError, match='stage 2 needs steps'):
        inside_rows(hint_fraction=1.0)


def test_bench_smoke(tmp_path):
    recs = kdbench_sweep(inside_configs(['fitnet', 'rkd_kd'], seeds=[0], base=TINY), tmp_path, progress=False)
    table = kdbench_table(recs)
    assert table['method'].tolist() == ['fitnet', 'rkd_kd']
    assert (table['acc_mean'] > 0.1).all()


def test_byot_loss_formula():
    g = torch.Generator().manual_seed(4)
    y = torch.randint(0, 10, (5,), generator=g)
    z1, zc = torch.randn(5, 10, generator=g), torch.randn(5, 10, generator=g)
    f1, fc = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    T, a, b = 3.0, 0.2, 0.3
    kl = F.kl_div(F.log_softmax(z1 / T, 1), F.softmax(zc / T, 1), reduction='batchmean') * T * T
    ce = F.cross_entropy(z1, y) + F.cross_entropy(zc, y)
    expected = (1 - a) * ce + a * kl + b * ((f1 - fc) ** 2).sum(1).mean()
    assert torch.allclose(byot_loss([z1], zc, [f1], fc, y, T, a, b), expected, atol=1e-5)
    with pytest.raises(ValueError, match='every shallow exit'):
        byot_loss([], zc, [], fc, y)


def test_byot_exits_and_params():
    student = build_model('mlp', dict(hidden=[16, 16, 16]), (1, 28, 28))
    m = BYOT()
    m.setup(student, None)  # the exits' widths from the student's roles; no teacher is read
    x = torch.randn(3, 1, 28, 28)
    z = ExitsView(student, m)(x)
    assert z.shape == (3, 3, 10) and torch.allclose(z[:, -1], student(x))
    assert len(list(m.parameters())) == 8  # two exits: bottleneck and classifier, weights and biases
    with pytest.raises(ValueError, match='one width per exit'):
        BYOT(exit_layers=('stage1',), exit_dims=(16, 16))
    with pytest.raises(ValueError, match='beta'):
        BYOT(beta=-1.0)


def test_directional_derivative_finite_difference():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.Softplus(), nn.Linear(5, 4)).double()
    x = torch.randn(3, 1, 2, 3, dtype=torch.float64)
    v = unit_directions(x, 1)[0]
    assert v.dtype == torch.float64 and torch.allclose(v.flatten(1).norm(dim=1), torch.ones(3, dtype=x.dtype))
    jv = directional_derivative(net, x, v)
    h = 1e-6
    assert torch.allclose(jv, (net(x + h * v) - net(x - h * v)) / (2 * h), atol=1e-8)
    with pytest.raises(ValueError, match="inputs' shape"):
        directional_derivative(net, x, v[:2])


def test_sobolev_zero_for_identical_nets_and_grad():
    torch.manual_seed(1)
    t = build_model('mlp', dict(hidden=[8]), (1, 28, 28)).eval()
    s = build_model('mlp', dict(hidden=[8]), (1, 28, 28))
    s.load_state_dict(t.state_dict())
    x = torch.randn(4, 1, 28, 28)
    assert sobolev_loss(s, t, x, n_dirs=3) < 1e-10  # the same function: the same derivatives
    s.net[1].weight.data += 0.1 * torch.randn_like(s.net[1].weight)
    loss = sobolev_loss(s, t, x)
    loss.backward()
    assert loss > 0 and s.net[1].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match='n_dirs'):
        Sobolev(n_dirs=0)


def test_sskd_parts():
    img = torch.arange(16.).view(1, 1, 4, 4)
    r = rotate_copies(img)
    assert r.shape == (3, 1, 4, 4) and torch.equal(r[1], img[0].flip(-1).flip(-2))  # 180°: both axes flipped
    a = torch.eye(3).repeat(3, 1)  # every copy most similar to its own original
    target = torch.arange(3).repeat(3)
    assert torch.allclose(similarity(a, torch.eye(3)), a)
    assert len(keep_rows(a, target, 0.0)) == 9  # no wrong rows: all kept
    wrong = a.roll(1, dims=1)  # every row wrong
    assert len(keep_rows(wrong, target, 0.5)) == 4
    assert sskd_ss_loss(a, a, target) < 1e-7
    with pytest.raises(ValueError, match='square'):
        rotate_copies(torch.randn(2, 1, 3, 4))


def test_sskd_needs_inputs():
    m = SSKD()
    with pytest.raises(ValueError, match='inputs=MethodInputs'):
        m(torch.randn(2, 10), torch.randn(2, 10), torch.zeros(2, dtype=torch.long), {}, {})
    assert SSKD.uses_inputs and Sobolev.uses_inputs and not BYOT.uses_inputs


def test_new_rows_smoke(tmp_path):
    cfgs = inside_configs(['byot', 'sobolev', 'sskd'], seeds=[0], base=TINY)
    assert cfgs[0].student_kwargs == dict(hidden=[16, 16, 16]) and cfgs[1].student_kwargs == dict(hidden=[16])
    recs = kdbench_sweep(cfgs, tmp_path, progress=False)
    table = kdbench_table(recs, order=['byot', 'sobolev', 'sskd'])
    assert table['method'].tolist() == ['byot', 'sobolev', 'sskd'] and (table['acc_mean'] > 0.1).all()
    exits = byot_exits_sweep(cfgs[:1], tmp_path, progress=False)[0]['result']
    assert len(exits['exit_acc']) == 3
    assert exits['exit_acc'][-1] == pytest.approx(recs[0]['result']['acc'], abs=1e-6)  # the bench's student


def test_sobolev_forward_mode_with_batch_norm():
    torch.manual_seed(2)
    s = build_model('resnet20', {}, (3, 32, 32)).train()  # batch norm in training mode
    t = build_model('resnet20', {}, (3, 32, 32)).eval()
    for p in t.parameters():
        p.requires_grad_(False)
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(RuntimeError, match='batch_norm'):  # reverse mode twice needs 3rd derivatives
        sobolev_loss(s, t, x).backward()
    loss = sobolev_loss(s, t, x, forward_mode=True)
    loss.backward()
    assert torch.isfinite(loss) and s.stem.weight.grad.abs().sum() > 0


@pytest.mark.parametrize('row', ['fitnet_joint', 'rkd_kd', 'byot', 'sobolev', 'sskd'])
def test_roles_on_resnets(row):
    "The GPU tier's rows name no layers and no widths: the roles and `setup` resolve them on ResNets."
    kwargs = dict(fitnet_joint=dict(hint_steps=0, joint=True, conv=True, student_layer='stage2',
                                    teacher_layer='stage2'),
                  rkd_kd=dict(kd=True), byot=dict(conv=True), sobolev=dict(forward_mode=True), sskd={})[row]
    torch.manual_seed(0)
    s = build_model('resnet8', {}, (3, 32, 32))
    t = build_model('resnet20', {}, (3, 32, 32)).eval()
    m = get_method(dict(fitnet_joint='fitnet', rkd_kd='rkd').get(row, row), **kwargs)
    m.setup(s, t)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    with capture_features(s, m.student_layers) as sf, capture_features(t, m.teacher_layers) as tf:
        zs = s(x)
        with torch.no_grad(): zt = t(x)
        extra = dict(inputs=MethodInputs(x=x, student=s, teacher=t)) if m.uses_inputs else {}
        loss = m(zs, zt, y, sf, tf, **extra)
    loss.backward()
    assert torch.isfinite(loss) and s.stem.weight.grad.abs().sum() > 0


def _run(label, seed, acc, classes=10):
    "A bench run as `leaderboard_records` returns it (no training)."
    return dict(config=dict(method='x', label=label, seed=seed), chapter='15 zoo II',
                result=dict(acc=acc, agreement=0.9, control_agreement=0.9, final_loss=0.1,
                            pred_classes=classes))


def test_paired_family_holm_and_divergence():
    runs = [_run('kd', s, 0.90 + 0.01 * s) for s in range(4)]
    runs += [_run('a', s, 0.905 + 0.01 * s + 0.001 * s * s) for s in range(4)]
    runs += [_run('b', s, 0.88 + 0.01 * s, classes=1 if s == 0 else 10) for s in range(4)]  # seed 0 diverged
    fam = paired_family(runs, {'a': 'kd', 'b': 'kd'})
    d = torch.tensor([0.005 + 0.001 * s * s for s in range(4)], dtype=torch.float64)
    assert fam.loc['a', 'diff'] == pytest.approx(d.mean().item()) and fam.loc['b', 'n'] == 3
    p = sorted(fam['p'])
    assert sorted(fam['p_holm']) == pytest.approx([min(1, 2 * p[0]), max(min(1, 2 * p[0]), p[1])])
    assert row_refs('byot_hint (paper)') == ('deep_kd', 'deep_labels')
    assert row_refs('sskd') == ('kd', 'labels')
    with pytest.raises(ValueError, match='run the sweep'):
        paired_family(runs, {'c': 'kd'})


def test_row_setting(tmp_path):
    choice = dict(chosen=dict(w_dist=2.5, w_angle=5.0), paper=dict(w_dist=25.0, w_angle=50.0),
                  val_acc={'rkd[w_dist=25,w_angle=50]': 0.9, 'rkd[w_dist=2.5,w_angle=5]': 0.92,
                           'rkd[w_dist=0.25,w_angle=0.5]': 0.91})
    (tmp_path / 'protocol.json').write_text(json.dumps({'15 zoo II': {'rkd': choice}}))
    assert row_setting(tmp_path, 'rkd') == ('w_dist=2.5, w_angle=5 (paper × 0.1)', '0.920')
    assert row_setting(tmp_path, 'rkd (paper)') == ('w_dist=25, w_angle=50 (paper)', '0.900')
    assert row_setting(tmp_path, 'labels') == ('—', '—')
