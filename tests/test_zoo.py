"Edge cases and a CLI smoke test for kdnotes.kdbench (the KD bench), zoo I's methods and kdnotes.zoo_outputs."
import argparse, json, math
from dataclasses import replace
import pytest
import torch
import torch.nn.functional as F
from kdnotes.distill import kd_loss, get_method
from kdnotes.kdbench import (KDBenchConfig, check_kdbench_config, kdbench_configs, kdbench_run, kdbench_sweep,
                             kdbench_table, plot_leaderboard)
from kdnotes.methods.dkd import dkd_terms, dkd_loss, DKD
from kdnotes.methods.dist import dist_loss, pearson_rows
from kdnotes.methods.noisy import perturb_logits
from kdnotes.methods.tang import tang_target
from kdnotes.zoo_outputs import (zoo_rows, zoo_configs, add_cli, ChainConfig, chain_run,
                                 chain_sweep, teacher_choice_configs, confusable_subsets, collapse,
                                 combine_specialists, specialist_configs, specialist_sweep, SpecialistConfig,
                                 specialist_run)

torch.set_num_threads(1)
TINY = KDBenchConfig(teacher_epochs=1, epochs=1, teacher_kwargs=dict(hidden=[32], dropout=0.0))


def _logits(seed=0, n=32, c=7):
    g = torch.Generator().manual_seed(seed)
    zs, zt = torch.randn(n, c, generator=g) * 2, torch.randn(n, c, generator=g) * 3
    return zs, zt, torch.randint(0, c, (n,), generator=g)


@pytest.mark.parametrize('T', [1.0, 4.0, 10.0])
def test_dkd_decomposes_kd(T):
    zs, zt, y = _logits()
    tckd, nckd = dkd_terms(zs, zt, y, T)
    kl = F.kl_div((zs / T).log_softmax(1), (zt / T).log_softmax(1), log_target=True, reduction='none')
    kd = T**2 * kl.sum(1)
    pt = (zt / T).softmax(1)[torch.arange(len(y)), y]
    assert torch.allclose(kd, tckd + (1 - pt) * nckd, atol=1e-4)
    assert torch.allclose(dkd_loss(zs, zt, y, alpha=1.0, beta=1.0, T=T), (tckd + nckd).mean())


def test_dkd_rejects_unlabelled_and_bad_shapes():
    zs, zt, y = _logits()
    with pytest.raises(ValueError, match='drop unlabelled'): dkd_loss(zs, zt, torch.full_like(y, -1))
    with pytest.raises(ValueError, match=r'\(N, C\)'): dkd_loss(zs, zt[:, :5], y)
    with pytest.raises(ValueError, match='warmup_steps'): DKD(warmup_steps=-1)


def test_dist_matches_corrcoef_and_is_affine_invariant_per_row():
    zs, zt, _ = _logits(1)
    ys, yt = (zs / 4).softmax(1), (zt / 4).softmax(1)
    ref = torch.stack([torch.corrcoef(torch.stack([a, b]))[0, 1] for a, b in zip(ys, yt)])
    assert torch.allclose(pearson_rows(ys, yt), ref, atol=1e-5)
    scale, shift = torch.rand(len(ys), 1) + 0.5, torch.randn(len(ys), 1)
    assert torch.allclose(pearson_rows(scale * ys + shift, yt), ref, atol=1e-4)
    assert dist_loss(zt, zt).abs() < 1e-5
    with pytest.raises(ValueError, match='N >= 2'): dist_loss(zs[:1], zt[:1])


def test_noise_scale_and_fraction():
    torch.manual_seed(0)
    z = torch.randn(40000, 5) + 3
    zn = perturb_logits(z, sigma=0.3, p=0.25)
    rows = (zn != z).any(1)
    assert abs(rows.float().mean() - 0.25) < 0.01
    assert abs((zn[rows] / z[rows] - 1).std() - 0.3) < 0.005
    with pytest.raises(ValueError, match=r'\[0, 1\]'): perturb_logits(z, 0.1, p=1.5)


@pytest.mark.parametrize('keep', ['full', 'pt', 'sim', 'ls'])
def test_tang_targets_are_distributions(keep):
    _, zt, y = _logits(2)
    q = tang_target(zt, y, 2.0, keep)
    assert torch.allclose(q.sum(1), torch.ones(len(y)), atol=1e-5) and (q >= 0).all()


def test_tang_target_builds_on_its_inputs_device():
    # issue 24 item 7: kd_sim's class means were made on the CPU whatever the labels' device. Under a 'meta'
    # default device a tensor made without a device lands on 'meta'; only tensors made from p stay on the CPU
    _, zt, y = _logits(2)
    with torch.device('meta'):
        q = tang_target(zt, y, 2.0, 'sim')
    assert q.device == zt.device and torch.equal(q, tang_target(zt, y, 2.0, 'sim'))


def test_every_zoo_method_builds_and_gives_a_finite_loss():
    zs, zt, y = _logits(3, c=10)
    for cfg in zoo_configs(seeds=[0]):
        check_kdbench_config(cfg)
        assert 'label' not in cfg.method_kwargs
        assert cfg.chapter == ('08 bench' if cfg.label in ('labels', 'kd') else '14 zoo I')
        assert torch.isfinite(get_method(cfg.method, **cfg.method_kwargs)(zs, zt, y, {}, {})), cfg.label


def test_bench_refuses_bad_configs_before_training():
    with pytest.raises(ValueError, match='unknown method'): check_kdbench_config(replace(TINY, method='crd'))
    with pytest.raises(ValueError, match='do not fit'):
        check_kdbench_config(replace(TINY, method_kwargs=dict(beta=1)))
    with pytest.raises(ValueError, match='unknown data'): check_kdbench_config(replace(TINY, data='svhn'))


def test_same_init_same_batches_for_student_and_control(tmp_path):
    # with the labels-only method the teacher is never used: student and control student must coincide
    r = kdbench_run(replace(TINY, method='labels', method_kwargs={}), tmp_path)
    assert (r['agreement'], r['kl']) == (r['control_agreement'], r['control_kl'])


def test_sweep_table_and_leaderboard(tmp_path):
    cfgs = kdbench_configs(['labels', 'kd'], seeds=[0, 1], base=TINY)
    recs = kdbench_sweep(cfgs, tmp_path, progress=False)
    table = kdbench_table(tmp_path)
    assert table['method'].tolist() == ['labels', 'kd'] and table['n'].tolist() == [2, 2]
    assert table['acc_mean'].iloc[1] == pytest.approx(sum(r['result']['acc'] for r in recs[2:]) / 2)
    assert plot_leaderboard(table).axes[0].get_title().endswith('2 seeds')


def test_cli_zoo_tiny(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers())
    args = parser.parse_args(['zoo', '--methods', 'labels', 'kd', 'kd_pt', '--seeds', '1', '--epochs', '1',
                              '--teacher-epochs', '1', '--out', str(tmp_path)])
    summary = args.func(args)
    assert [row['method'] for row in summary['table']] == ['labels', 'kd', 'kd_pt']
    assert json.loads((tmp_path / 'zoo_summary.json').read_text())['seeds'] == 1
    assert (tmp_path / 'leaderboard.png').stat().st_size > 0
    assert 'kd_pt' in capsys.readouterr().out
    bad = parser.parse_args(['zoo', '--methods', 'crd', '--out', str(tmp_path / 'bad')])
    with pytest.raises(ValueError, match='unknown zoo methods'): bad.func(bad)
    assert not (tmp_path / 'bad').exists()  # refused before any work
    with pytest.raises(SystemExit): parser.parse_args(['zoo', '--seeds', '0'])
    assert {r.label for r in zoo_rows()} >= {'labels', 'kd', 'dkd', 'dist'}


def test_cli_zoo_chains_tiny(tmp_path):
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers())
    args = parser.parse_args(['zoo', '--methods', 'kd', '--chains', '--seeds', '1', '--epochs', '1',
                              '--teacher-epochs', '1', '--out', str(tmp_path)])
    summary = args.func(args)
    assert sorted(row['method'] for row in summary['table']) == ['ban_gen1', 'ban_gen2', 'kd', 'ta']
    assert len(list(tmp_path.glob('chain-*.json'))) == 3


def test_empty_chain_reads_the_bench_teachers(tmp_path):
    """A chain without intermediates is taught by the bench's teacher and control teacher (one checkpoint
    each); its student starts from `student_seed` (chapter 14 checks it against a distillation by hand)."""
    plain = kdbench_run(TINY, tmp_path)
    chained = chain_run(ChainConfig(TINY), tmp_path)
    assert chained['teacher_acc'] == plain['teacher_acc']
    assert len(list((tmp_path).glob('teacher-*.pt'))) == 2
    with pytest.raises(ValueError, match='at least one seed'): chain_sweep([], tmp_path)


def test_kdnotes_zoo_through_the_cli(tmp_path):
    """`kdnotes zoo` is registered: a tiny run through the command's entry point."""
    from kdnotes.cli import main
    argv = ['zoo', '--methods', 'labels', 'kd', '--seeds', '1', '--epochs', '1', '--teacher-epochs', '1',
            '--out', str(tmp_path)]
    assert main(argv) == 0


def test_teacher_choices_change_only_the_teacher():
    base = KDBenchConfig()
    for c in teacher_choice_configs(seeds=[3]):
        check_kdbench_config(c)
        assert (c.seed, c.student_kwargs, c.method_kwargs['T']) == (3, base.student_kwargs, 2.0)
        assert (c.teacher_epochs, c.teacher_kwargs) != (base.teacher_epochs, base.teacher_kwargs) \
            or c.label == 't_ep12'
        assert 'label' not in c.method_kwargs and c.chapter == '14 zoo I'


def test_combination_is_the_average_when_the_dustbin_is_one_class():
    # a specialist on classes 0..5 of 7 has a one-class dustbin: min KL(p_g||q) + KL(p_m||q) is the mean
    zs, zt, _ = _logits(4)
    zt[:, 6] -= 20  # the generalist's top class is never 6: the specialist is always active
    q = combine_specialists(zt, [zs], [list(range(6))], steps=600).softmax(1)
    assert torch.allclose(q, (zt.softmax(1) + zs.softmax(1)) / 2, atol=3e-3)
    assert torch.allclose(collapse(zs.log_softmax(1), [0, 3]).exp().sum(1), torch.ones(len(zs)), atol=1e-5)


def test_confusable_subsets_find_the_confused_pair_and_refuse_too_many():
    p = torch.full((40, 10), 0.02)
    p[:, [2, 8]] = 0.42
    assert confusable_subsets(p, n=1, size=2) == [[2, 8]]
    with pytest.raises(ValueError, match='n \\* size <= 10'): confusable_subsets(p, n=3, size=4)


def test_specialists_tiny(tmp_path):
    cfgs = specialist_configs([0], base=TINY, n=1, size=2, epochs=1, steps=10)
    res = specialist_sweep(cfgs, tmp_path, progress=False)[0]
    assert len(res['subsets'][0]) == 2 and 0 <= res['changed'] <= 1000
    assert len(list(tmp_path.glob('specialists-*.json'))) == 1
    with pytest.raises(ValueError, match='n \\* size'): specialist_run(SpecialistConfig(TINY, n=2, size=6))
    with pytest.raises(ValueError, match='at least one seed'): specialist_sweep([], tmp_path)


def test_cli_zoo_teachers_tiny(tmp_path):
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers())
    args = parser.parse_args(['zoo', '--methods', 'kd', '--teachers', '--seeds', '1', '--epochs', '1',
                              '--teacher-epochs', '1', '--out', str(tmp_path)])
    rows = [row['method'] for row in args.func(args)['table']]
    assert rows[0] == 'kd' and {'t_ep1', 't_h32', 't_h1024x1024'} <= set(rows)
    assert len(list((tmp_path / 'teacher_choice').glob('kdbench-*.json'))) == len(rows) - 1


def test_multiview_tiny_and_bad_configs():
    from kdnotes.zoo_multiview import MultiViewConfig, multiview_run, mv_forward, smoothed_relu, check_multiview
    res = multiview_run(MultiViewConfig(n_train=60, n_test=100, members=2, epochs=5))
    rows = ('members', 'ensemble', 'kd', 'self_distilled')
    assert {f'{k}_{c}' for k in rows for c in ('acc', 'single_acc', 'multi_acc')} <= set(res)
    cfg = MultiViewConfig(K=3, neurons=2, thr=0.5)
    w, x = torch.randn(6, 4), torch.randn(2, 3, 4)  # K = 3 classes of 2 neurons
    ref = smoothed_relu(x @ w.T, 3, 0.5).sum(1).view(2, 3, 2).sum(2)
    assert torch.allclose(mv_forward(w, x, cfg), ref)
    z = torch.tensor([-1.0, 0.25, 0.5, 2.0])
    assert torch.allclose(smoothed_relu(z, 3, 0.5), torch.tensor([0.0, 0.25**3 / 0.75, 0.5 / 3, 2 - 1 / 3]))
    with pytest.raises(ValueError, match='2..10 members'): multiview_run(MultiViewConfig(members=1))
    with pytest.raises(ValueError, match='D >= 2K'): check_multiview(MultiViewConfig(K=40))


def test_multiview_data_properties():
    from kdnotes.zoo_multiview import MultiViewConfig, multiview_data, multiview_views
    cfg = MultiViewConfig(seed=3, single=0.3, rho=0.2, sigma=0.5, gamma=0.0)
    feats = multiview_views(cfg)
    x, y, single, st = multiview_data(cfg, 3000, 7, feats)
    assert abs(single.float().mean() - 0.3) < 0.03
    own = st[torch.arange(3000), y]
    assert torch.allclose(own[single].amin(1) / own[single].amax(1), torch.full((int(single.sum()),), 0.2))
    assert ((own >= 1) & (own <= 1.2)).all(1)[~single].all()
    # without any noise the patches hold the features exactly: each on one patch, at its strength
    xq, _, _, stq = multiview_data(replace(cfg, sigma=0.0), 3000, 7, feats)
    proj = torch.einsum('npd,kvd->npkv', xq, feats)  # (N, P, K, 2)
    assert torch.allclose(proj.sum(1), stq, atol=1e-5) and torch.equal(stq, st)
    assert ((proj.abs() > 1e-6).sum(1) == (stq > 0).long()).all()
    assert ((stq > 0).sum((1, 2)) <= cfg.P).all()  # no more features than patches
    assert x.shape == (3000, cfg.P, cfg.D) and not torch.equal(x, multiview_data(cfg, 3000, 8, feats)[0])


def test_leaderboard_names_chapters_and_chains(tmp_path):
    from kdnotes.kdbench import zoo_leaderboard, leaderboard_headline
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers())
    args = parser.parse_args(['zoo', '--methods', 'kd', 'dkd', '--chains', '--seeds', '1', '--epochs', '1',
                              '--teacher-epochs', '1', '--out', str(tmp_path)])
    args.func(args)
    board = zoo_leaderboard(tmp_path).set_index('method')
    assert set(board.index) == {'kd', 'dkd', 'ta', 'ban_gen1', 'ban_gen2'}
    assert board.loc['kd', 'chapter'] == '08 bench' and board.loc['dkd', 'chapter'] == '14 zoo I'
    assert (board.loc['ban_gen1', 'chapter'], board.loc['ban_gen1', 'student']) == ('14 zoo I', 'mlp 512-512')
    assert board.loc['ta', 'own_mean'] == pytest.approx(board.loc['ta', 'agreement_mean']
                                                        - board.loc['ta', 'control_agreement_mean'])
    with pytest.raises(ValueError, match="'labels' and 'kd' rows"): leaderboard_headline(board.reset_index())


def test_gpu_tier_configs_build_without_a_gpu():
    from kdnotes.zoo_outputs import gpu_chains, gpu_teacher_choice
    chains, early = gpu_chains([0, 1]), gpu_teacher_choice([0])
    assert [c.label for c in chains] == ['ban_gen1', 'ban_gen2'] * 2
    assert {c.bench.student for c in chains} == {'resnet56'}
    assert [c.teacher_epochs for c in early] == [1, 3, 6, 240]
    for c in early: check_kdbench_config(c)


RESULTS = __import__('pathlib').Path(__file__).resolve().parent.parent / 'nbs' / 'results'


@pytest.mark.skipif(not (RESULTS / 'bench' / 'protocol.json').exists(), reason='no protocol runs committed')
def test_protocol_runs_of_the_chapter_are_complete_and_read_without_training():
    # issue 24: every row of the chapter ran under the protocol at 5 seeds, diverged runs named, not averaged
    from kdnotes.zoo_protocol import protocol_table, zoo_ledger
    from kdnotes.zoo_outputs import chain_rows
    rows = zoo_rows() + chain_rows()  # the chains ran under the protocol too
    t = protocol_table(RESULTS / 'bench', rows).set_index('row')
    assert {r.label for r in rows} <= set(t.index)
    assert ((t['n'] + t['diverged']) == 5).all(), t[['n', 'diverged']]
    paper = t.loc['dkd (paper)'] if 'dkd (paper)' in t.index else t.loc['dkd']  # the paper's row: beta 8
    assert paper['setting'] == 'alpha=1, beta=8'
    ledger = zoo_ledger(RESULTS / 'bench', RESULTS / 'zoo', rows)
    assert ledger['verdict'].str.match('reproduced|same direction|not reproduced').all()
    sp = ledger[ledger['claim'].str.startswith('specialists')]
    assert sp['verdict'].iloc[0] != 'reproduced'  # no seed's sign test on the changed digits reaches 0.05


def test_sign_test_range_bounds_the_exact_test():
    from kdnotes.zoo_protocol import sign_test_range
    assert sign_test_range(3, 3) == (0.125, 0.125)  # 3 fixed, none broken
    lo, hi = sign_test_range(3, 12)  # 3 to 11 discordant digits: p from 1/8 up to P(Bin(11, 1/2) >= 7)
    assert lo == 0.125 and hi == pytest.approx(sum(math.comb(11, i) for i in range(7, 12)) / 2**11)
    with pytest.raises(ValueError, match='net'): sign_test_range(4, 2)
