"""Integration checks of chapter 16 (kdnotes.zoo_without, methods/bss.py, methods/online.py): BSS through
`distill` with the authors' base samples and target sampling, its protocol grid, the online losses' gradients,
records."""
import dataclasses, math
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from kdnotes.data import Split, Augment
from kdnotes.distill import DistillConfig, distill, frozen, kd_loss, MethodInputs
from kdnotes.train import TrainConfig
from kdnotes.models import MLP
from kdnotes.methods.bss import BSS, bss_attack, bss_select, bss_target_classes, soft_ce
from kdnotes.methods.online import okddip_attention, okddip_loss, one_loss, dml_loss
from kdnotes.zoo_without import DataFreeConfig, check_datafree_config, OnlineConfig, check_online_config

torch.set_num_threads(1)


def _split(n, seed):
    g = torch.Generator().manual_seed(seed)
    return Split(torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8),
                 torch.randint(0, 3, (n,), generator=g))


def test_bss_trains_through_distill_and_leaves_teacher_alone():
    torch.manual_seed(0)
    teacher = frozen(MLP(n_classes=3, in_shape=(1, 8, 8), hidden=(16,)))
    before = [p.clone() for p in teacher.parameters()]
    student = MLP(n_classes=3, in_shape=(1, 8, 8), hidden=(4,))
    cfg = DistillConfig(train=TrainConfig(epochs=2, batch_size=16, lr=0.05, progress=False, device='cpu'))
    method = BSS(total_steps=8, attack_size=4, lo=0.0, hi=1.0)
    res = distill(teacher, student, _split(64, 1), _split(32, 2), cfg, Augment(), method=method)
    assert method.steps == 8 and math.isfinite(res['history'][-1]['loss'])
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters()))  # the search moves inputs


def test_bss_attacks_only_what_teacher_and_student_get_right():
    torch.manual_seed(0)
    teacher = frozen(MLP(n_classes=3, in_shape=(1, 8, 8), hidden=(16,)))
    student = MLP(n_classes=3, in_shape=(1, 8, 8), hidden=(4,))
    x = torch.randn(32, 1, 8, 8)
    zt, zs = teacher(x), student(x)
    y = zt.argmax(1)  # the teacher right everywhere
    inputs = MethodInputs(x=x, student=student, teacher=teacher)
    no_adv = BSS(total_steps=10, adversarial=False)(zs, zt, y, {}, {}, inputs=inputs)
    wrong = (zs.argmax(1) + 1) % 3  # labels the student never predicts: no base sample, no boundary term
    assert len(bss_select(zt, zs, wrong, 16)) == 0
    loss = BSS(total_steps=10)(zs, zt, wrong, {}, {}, inputs=inputs)
    assert torch.allclose(loss, BSS(total_steps=10, adversarial=False)(zs, zt, wrong, {}, {}, inputs=inputs))
    idx = bss_select(zt, zs, y, 16)  # the rule before issue 24 would also take the student's mistakes
    assert len(idx) and (zs[idx].argmax(1) == y[idx]).all() and (zt[idx].argmax(1) == y[idx]).all()
    assert BSS(total_steps=10)(zs, zt, y, {}, {}, inputs=inputs) > no_adv  # a boundary term is added


def test_bss_targets_follow_the_teacher_in_proportion():
    torch.manual_seed(0)
    z = torch.tensor([[40.0, 10.0, 5.0, 0.0, -5.0]]).repeat(20_000, 1)  # issue 24's confident teacher
    freq = torch.bincount(bss_target_classes(z), minlength=5) / len(z)
    assert freq[0] == 0 and abs(freq[1] - 0.9933) < 0.004  # the runner-up, not a quarter of the time
    assert freq[2] < 0.02 and freq[3] + freq[4] < 0.002


def test_bss_protocol_grid_and_weight():
    from kdnotes.kdbench import KDBenchConfig
    from kdnotes.protocol import bench_row, tune_configs
    row, chapter = bench_row('bss', KDBenchConfig())  # what `kdnotes kdbench --methods bss` runs
    assert chapter == '16 zoo II' and [t['w'] for t in row.tune] == [1.0, 0.1, 0.01]  # the authors' first
    assert {c.grad_clip for c in tune_configs([row], chapter=chapter)} == {1.0}
    zs, zt, y = torch.randn(4, 3), torch.randn(4, 3), torch.randint(0, 3, (4,))
    loss = BSS(total_steps=10, adversarial=False, w=0.01)(zs, zt, y, {}, {})
    assert torch.allclose(loss, F.cross_entropy(zs, y) + 0.04 * soft_ce(zs, zt))  # w scales λ_KD = 4 at τ = 0
    with pytest.raises(ValueError, match='w must be'):
        BSS(total_steps=10, w=float('nan'))


def test_attack_stays_in_range_and_moves_only_live_examples():
    torch.manual_seed(0)
    net = frozen(nn.Sequential(nn.Flatten(), nn.Linear(6, 3)))
    x = torch.rand(8, 1, 2, 3)
    adv = bss_attack(net, x, (net(x).argmax(1) + 1) % 3, steps=50, lo=0.0, hi=1.0)
    assert adv.min() >= 0 and adv.max() <= 1
    assert bss_attack(net, x, (net(x).argmax(1) + 1) % 3, steps=0).equal(x)  # no step: unchanged


def test_online_targets_carry_gradient():
    torch.manual_seed(0)
    z = torch.randn(3, 5, 4, requires_grad=True)
    y = torch.randint(0, 4, (5,))
    # OKDDip: peer 0's target is peer 1 (peers 1 and 2 their own): peer 1 gets the gradient of being a target
    att = torch.zeros(5, 3, 3)
    att[:, 0, 1], att[:, 1, 1], att[:, 2, 2] = 1.0, 1.0, 1.0
    lead = torch.randn(5, 4)
    grad = torch.autograd.grad(okddip_loss(z, lead, att, y), z)[0][1]
    zz = z.detach().clone().requires_grad_(True)
    expected = torch.autograd.grad(F.cross_entropy(zz[1], y) + kd_loss(z[0].detach(), zz[1], T=3.0)
                                   + kd_loss(lead, zz.mean(0), T=3.0), zz)[0][1]
    assert torch.allclose(grad, expected, atol=1e-5)
    att = okddip_attention(torch.randn(3, 5, 2), torch.randn(3, 5, 2))
    assert torch.allclose(att.sum(-1), torch.ones(5, 3))  # a distribution over the peers, per peer
    gate = torch.softmax(torch.randn(5, 3), 1).requires_grad_(True)
    assert torch.autograd.grad(one_loss(z, gate, y), gate)[0].abs().sum() > 0  # ONE trains its gate
    assert torch.isfinite(dml_loss(z, y))


@pytest.mark.parametrize('bad, match', [(dict(steps=0), 'steps must be >= 1'),
                                        (dict(batch_size=1), '>= 2'),
                                        (dict(ie=-1.0), 'loss weights'), (dict(width=[8]), 'two channel')])
def test_datafree_config_checks(bad, match):
    with pytest.raises(ValueError, match=match):
        check_datafree_config(DataFreeConfig(**bad))


@pytest.mark.parametrize('bad, match', [(dict(method='kdcl'), 'unknown online method'),
                                        (dict(peers=1), '>= 2'), (dict(ramp=2.0), 'fraction'),
                                        (dict(T=0.0), 'temperature')])
def test_online_config_checks(bad, match):
    with pytest.raises(ValueError, match=match):
        check_online_config(OnlineConfig(**bad))


def test_records_read_as_bench_rows():
    from kdnotes.kdbench import bench_record, method_label, student_name, record_chapter
    from kdnotes.experiments import to_jsonable, config_hash
    rows = ((OnlineConfig(method='okddip', label='okddip_code'), 'okddip_code'), (DataFreeConfig(), 'dafl'))
    for cfg, label in rows:
        row = bench_record(dict(config=to_jsonable(cfg), result=dict(acc=0.5)))
        assert method_label(row['config']) == label and student_name(row['config']) == 'mlp 16'
        assert record_chapter(row['config']) == '16 zoo II'  # the leaderboard takes it from the record
        assert config_hash(cfg) == config_hash(dataclasses.replace(cfg, chapter='elsewhere'))  # not a setting


def test_bench_registry_knows_the_chapter():
    from kdnotes.distill import method_info
    from kdnotes.kdbench import BENCH_TABLES
    from kdnotes.zoo_without import bss_rows
    info = method_info('bss')
    assert info['chapter'] == '16 zoo II' and info['paper'] and info['cls'] == 'kdnotes.methods.bss.BSS'
    rows = {r.label: r for r in BENCH_TABLES['16 zoo II']()}
    assert rows == {r.label: r for r in bss_rows()} and list(rows)[:2] == ['labels', 'kd']
    assert rows['bss'].kwargs == info['defaults']  # a bare 'bss' on the bench runs the chapter's row
