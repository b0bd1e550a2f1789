"Tests of kdnotes.cifar: the Stanton et al. pipeline end to end at tiny scale (digits, resnet8, 1 epoch), offline."
import argparse, contextlib, io, json
from dataclasses import replace
import pytest, torch
from kdnotes.experiments import ResultStore, config_hash, run_budgeted, encode_preds, decode_preds
from kdnotes.synthetic import add_cli as add_synth_cli
from kdnotes.cifar import check_student_config, estimate_epoch_seconds
from kdnotes.cifar import (CifarTeacherConfig, StudentConfig, member_configs, cifar_data, make_model,
                           teacher_path, cifar_teacher, run_student, add_controls, self_distill_sweep, ensemble_sweep,
                           run_cost, cifar_configs, plot_self_distill, plot_ensemble, add_cli)

T = CifarTeacherConfig(dataset='digits', arch='resnet8', epochs=1, batch_size=64, lr=0.05, device='cpu')
S = StudentConfig(teacher=T, arch='resnet8', epochs=1, batch_size=64, lr=0.05)

@pytest.fixture(autouse=True, scope='module')
def one_thread():
    n = torch.get_num_threads(); torch.set_num_threads(1); yield; torch.set_num_threads(n)

def parser():
    ap = argparse.ArgumentParser(prog='kdnotes'); sub = ap.add_subparsers(); add_cli(sub); add_synth_cli(sub)
    return ap

def test_configs_and_sweeps():
    assert [t.seed for t in member_configs(replace(S, n_teachers=2, seed=3))] == [300, 301]
    with pytest.raises(ValueError, match='n_teachers'): member_configs(replace(S, n_teachers=0))
    sd = self_distill_sweep(replace(S, synth_id='x'), (0, 10), (1, 3), (0, 1))
    assert len(sd) == 8 and sd[0].synth_id == '' and sd[1].synth_id == 'x' and [c.seed for c in sd[:4]] == [0] * 4
    assert config_hash(ensemble_sweep(S, (1,), (0,))[0]) == config_hash(sd[0])
    with pytest.raises(ValueError, match='synth_id'): self_distill_sweep(S)
    gpu = cifar_configs('self', 'gpu', synth_id='abc')
    assert len(gpu) == 20 and {c.n_synth for c in gpu} == {0, 12500, 25000, 37500, 50000} and gpu[0].arch == 'resnet56'
    assert len(cifar_configs('ensemble', 'gpu')) == 12
    with pytest.raises(ValueError, match='preset'): cifar_configs('self', 'huge')
    with pytest.raises(ValueError, match='sweep'): cifar_configs('other', 'tiny')

def test_data_models_preds():
    d = cifar_data('digits')
    assert len(d['train']) + len(d['test']) == 1797 and len(d['test']) == 500 and d['in_shape'] == (1, 8, 8)
    assert make_model('resnet8', (1, 8, 8))(d['test'].x[:3]).shape == (3, 10)
    with pytest.raises(ValueError, match='choose'): cifar_data('svhn')
    z = torch.randn(20, 10); assert torch.equal(decode_preds(encode_preds(z)), z.argmax(1))
    with pytest.raises(ValueError, match='10 classes'): encode_preds(torch.randn(2, 11))

def test_controls():
    mk = lambda seed, k, tp, sp: dict(config=dict(seed=seed, n_teachers=k), result=dict(teacher_pred=tp, student_pred=sp, agreement=1.0))
    df = add_controls([mk(0, 1, '00', '00'), mk(1, 1, '11', '10'), mk(2, 1, '01', '01'), mk(0, 2, '11', '11')])
    assert df['control_agreement'].tolist()[:3] == pytest.approx([0.5, 0.25, 0.25])  # '00' vs '10','01'; '11' vs '00','01'; '01' vs '00','10'
    assert df['control_agreement'].isna().tolist()[3]

def test_run_budgeted_and_cost(tmp_path):
    st, calls = ResultStore(tmp_path), []
    cfgs = ensemble_sweep(S, (1, 2, 3), (0,))
    fn = lambda c: calls.append(c.n_teachers) or {'ok': 1}
    cost = lambda c: run_cost(c, tmp_path, 100)  # epoch-units
    assert run_budgeted('student', cfgs, fn, st, cost, max_runs=1, progress=False)['ran'] == 1
    assert run_budgeted('student', cfgs, fn, st, cost, time_budget=0.0, unit_seconds=10.0, progress=False)['ran'] == 0
    out = run_budgeted('student', cfgs, fn, st, cost, progress=False)
    assert (out['ran'], out['remaining'], calls) == (2, 0, [1, 2, 3])
    # 1 epoch over 2x the data, each step with 3 teacher forwards (1/3 of a step each), plus 3 teachers
    units = run_cost(replace(S, n_synth=100, n_teachers=3), tmp_path, 100)
    assert units == pytest.approx(2 * (1 + 3 / 3) + 3)

def test_run_student_and_teacher_reuse(tmp_path):
    st = ResultStore(tmp_path / 'res'); synth = torch.randint(0, 256, (30, 1, 8, 8), dtype=torch.uint8)
    r = run_student(replace(S, n_teachers=2, n_synth=30, synth_id='rand'), tmp_path, synth, st)
    for k in ('student_acc', 'teacher_acc', 'agreement', 'synth_confidence', 'synth_hist_tv', 'synth_sha1'): assert k in r
    assert len(r['member_acc']) == 2 and len(r['teacher_pred']) == 500 and len(st.records('teacher')) == 2
    with pytest.raises(ValueError, match='kdnotes synth'): run_student(replace(S, n_synth=31, synth_id='rand'), tmp_path, synth)
    t0 = member_configs(S)[0]; teacher_path(t0, tmp_path).unlink()
    cifar_teacher(t0, tmp_path, st)  # a fresh machine: retrained, first record kept
    assert teacher_path(t0, tmp_path).exists() and len(st.records('teacher')) == 2

def test_end_to_end_cli(tmp_path):
    "DDPM on digits -> samples -> self-distillation sweep with controls -> ensemble sweep -> summaries and figures; resumable."
    ap, out, runs = parser(), str(tmp_path / 'res'), str(tmp_path / 'runs')
    a = ap.parse_args(['synth', '--dataset', 'digits', '--time-budget', '1', '--n', '40', '--steps', '2', '--channels', '8', '16',
                       '--layers', '1', '--no-attention', '--device', 'cpu', '--runs', runs, '--out', out])
    syn = a.func(a)
    argv = ['cifar', 'self', '--preset', 'tiny', '--epochs', '1', '--n-synth', '0', '40', '--n-teachers', '1', '--seeds', '0', '1',
            '--synth', syn['path'], '--device', 'cpu', '--out', out, '--ckpt-dir', runs]
    first = ap.parse_args(argv + ['--max-runs', '1']); r1 = first.func(first)
    assert (r1['ran'], r1['remaining']) == (1, 3)  # a --max-runs command stops early ...
    r2 = ap.parse_args(argv); r2 = r2.func(r2)
    assert (r2['ran'], r2['remaining']) == (3, 0)  # ... and the next one resumes
    summ = json.loads((tmp_path / 'res' / 'summary-self.json').read_text())
    assert summ['n_runs'] == 4 and {row['n_synth'] for row in summ['table']} == {0, 40}
    assert all(row['n'] == 2 and row['control_agreement_mean'] == row['control_agreement_mean'] for row in summ['table'])  # 2 seeds, controls not NaN
    assert (tmp_path / 'res' / 'fig-self.png').exists()
    recs = ResultStore(out).records('student'); assert all('provenance' in rec for rec in recs)
    assert {rec['config']['synth_id'] for rec in recs} == {'', syn['id']}
    e = ap.parse_args(['cifar', 'ensemble', '--preset', 'tiny', '--epochs', '1', '--sizes', '1', '2', '--seeds', '0', '1', '--device', 'cpu',
                       '--out', out, '--ckpt-dir', runs])
    re_ = e.func(e); assert (re_['ran'], re_['remaining']) == (2, 0)  # size 1 was already run by the self sweep
    assert (tmp_path / 'res' / 'fig-ensemble.png').exists()
    plot_ensemble(add_controls(ResultStore(out).records('student'))); plot_self_distill(add_controls(recs))

def test_cli_needs_synth_for_synthetic_sizes(tmp_path):
    ap = parser()
    a = ap.parse_args(['cifar', 'self', '--preset', 'tiny', '--epochs', '1', '--seeds', '0', '--device', 'cpu', '--out', str(tmp_path)])
    with pytest.raises(ValueError, match='synth_id'): a.func(a)


def test_run_budgeted_skips_what_does_not_fit_and_goes_on(tmp_path):
    st, calls = ResultStore(tmp_path), []
    cfgs = ensemble_sweep(S, (1, 3, 2), (0,))  # costs 2.33, 5, 3.67 epoch-units (teachers not on disk)
    now = [0.0]  # a fake clock: each run takes its cost in seconds
    cost = lambda c: run_cost(c, tmp_path, 100)  # epoch-units

    def fn(c):
        calls.append(c.n_teachers)
        now[0] += run_cost(c, tmp_path, 100)
        return {'ok': 1}

    out = run_budgeted(
        'student', cfgs, fn, st, cost, time_budget=6.05, unit_seconds=1.0, progress=False, clock=lambda: now[0]
    )
    assert (out['ran'], out['skipped'], out['remaining'], calls) == (
        2,
        1,
        1,
        [1, 2],
    )  # the 3-teacher run is skipped, the next still runs
    with pytest.raises(ValueError, match='unit_seconds > 0'):
        run_budgeted('student', cfgs, fn, st, cost, time_budget=60, progress=False)


def test_cost_counts_ensemble_teachers_forward_passes(tmp_path):
    one, three = run_cost(S, tmp_path, 100), run_cost(replace(S, n_teachers=3), tmp_path, 100)
    for t in member_configs(replace(S, n_teachers=3)):
        teacher_path(t, tmp_path).parent.mkdir(exist_ok=True)
        teacher_path(t, tmp_path).touch()
    # teachers on disk: what is left is the student's epoch, with 1 or 3 teacher forward passes per step
    assert run_cost(S, tmp_path, 100) == pytest.approx(1 + 1 / 3) and run_cost(
        replace(S, n_teachers=3), tmp_path, 100
    ) == pytest.approx(2.0)
    assert three - run_cost(replace(S, n_teachers=3), tmp_path, 100) == pytest.approx(3) and one > run_cost(
        S, tmp_path, 100
    )


def test_estimate_epoch_seconds_times_a_subset():
    sec = estimate_epoch_seconds(S, n_images=128)
    assert 0 < sec < 60


def test_student_configs_checked_before_work(tmp_path):
    check_student_config(S)
    for bad, msg in (
        (dict(epochs=0), 'epochs must be >= 1'),
        (dict(arch='vgg'), 'unknown architecture'),
        (dict(T=0), 'must be > 0'),
        (dict(n_synth=-1), 'n_synth must be >= 0'),
        (dict(n_teachers=0), 'n_teachers must be'),
    ):
        with pytest.raises(ValueError, match=msg):
            check_student_config(replace(S, **bad))
    with pytest.raises(ValueError, match='kdnotes synth --n 50'):
        check_student_config(replace(S, n_synth=50, synth_id='x'), 40)


def test_cli_fails_fast_on_bad_options(tmp_path):
    ap, out = parser(), str(tmp_path / 'res')
    base = [
        'cifar',
        'self',
        '--preset',
        'tiny',
        '--epochs',
        '1',
        '--device',
        'cpu',
        '--out',
        out,
        '--ckpt-dir',
        str(tmp_path / 'runs'),
    ]
    bad_file = tmp_path / 'notes.txt'
    bad_file.write_text('not a tensor file')
    small = tmp_path / 'small.pt'
    from kdnotes.train import save_samples

    save_samples(small, torch.zeros(10, 1, 8, 8, dtype=torch.uint8), id='small')
    for extra, msg in (
        (['--synth', str(bad_file)], 'notes.txt is not a sample file'),
        (['--synth', str(small), '--n-synth', '0', '40'], 'sample file has 10'),
        (['--launcher', 'local', '--max-runs', '1'], "budget one machine's serial sweep"),
    ):
        a = ap.parse_args(base + extra)
        with pytest.raises(ValueError, match=msg):
            a.func(a)
    for extra, msg in ((['--seeds', '0', 'x'], "argument --seeds: expected an integer >= 0, got 'x'"),
                       (['--time-budget', '0'], 'argument --time-budget: expected a finite number > 0'),
                       (['--max-runs', '0'], 'argument --max-runs: expected an integer >= 1')):
        err = io.StringIO()  # argparse refuses these itself, naming the option
        with contextlib.redirect_stderr(err), pytest.raises(SystemExit): ap.parse_args(base + extra)
        assert msg in err.getvalue(), err.getvalue()
    assert (
        not (tmp_path / 'runs').exists() and not (tmp_path / 'res').exists()
    )  # nothing trained, nothing written
