"`kdnotes synth` end to end (train, sample, record, reuse); killed sampling resumes. Unit tests: nbs/21."
import argparse, json
from dataclasses import replace
import pytest, torch
from kdnotes.data import digits
from kdnotes.train import save_samples, load_samples
from kdnotes.ddpm import DDPMConfig, make_scheduler, train_ddpm, sample
from kdnotes.synthetic import SampleConfig, add_cli

TINY = DDPMConfig(dataset='digits', channels=(8, 16), layers_per_block=1, attention=False, lr=2e-3, warmup_steps=5,
                  batch_size=32, time_budget=1.0, ema_decay=0.9, flip=False, device='cpu')

@pytest.fixture(autouse=True, scope='module')
def one_thread():
    n = torch.get_num_threads(); torch.set_num_threads(1); yield; torch.set_num_threads(n)

@pytest.fixture(scope='module')
def trained():
    x = digits().x[:128]
    unet, ema, hist = train_ddpm(x, replace(TINY, max_steps=6, time_budget=60), progress=False)
    return unet, ema, hist


def test_cli_synth_tiny_and_reuse(tmp_path):
    ap = argparse.ArgumentParser(); add_cli(ap.add_subparsers())
    argv = ['synth', '--dataset', 'digits', '--time-budget', '1', '--n', '6', '--steps', '2', '--channels', '8', '16', '--layers', '1',
            '--no-attention', '--device', 'cpu', '--runs', str(tmp_path / 'runs'), '--out', str(tmp_path / 'res')]
    args = ap.parse_args(argv); r1 = args.func(args)
    x, meta = load_samples(r1['path'])
    assert x.shape == (6, 1, 8, 8) and meta['id'] == r1['id'] and meta['ddpm']['dataset'] == 'digits'
    recs = list((tmp_path / 'res').glob('synth-*.json')); assert len(recs) == 1
    assert 'provenance' in json.loads(recs[0].read_text())
    r2 = args.func(ap.parse_args(argv)); assert r2['id'] == r1['id']  # reused, not retrained
    assert len(list((tmp_path / 'res').glob('synth-*.json'))) == 1


def test_cli_validates_options_before_training(tmp_path):
    import time

    ap = argparse.ArgumentParser()
    add_cli(ap.add_subparsers())
    base = [
        'synth',
        '--dataset',
        'digits',
        '--time-budget',
        '30',
        '--channels',
        '8',
        '16',
        '--device',
        'cpu',
        '--runs',
        str(tmp_path / 'runs'),
        '--out',
        str(tmp_path / 'res'),
    ]
    for extra, msg in (
        (['--n', '0'], '--n must be a whole number >= 1'),
        (['--steps', '0'], '--steps must be a whole number >= 1'),
        (['--channels', '8', '12'], 'multiples of 8'),
    ):
        args = ap.parse_args(base + extra)
        t0 = time.perf_counter()
        with pytest.raises(ValueError, match=msg):
            args.func(args)
        assert time.perf_counter() - t0 < 5  # no 30-s DDPM first
    assert not (tmp_path / 'runs').exists()


def test_sampling_in_chunks_resumes_from_the_partial_file(trained, tmp_path):
    from kdnotes.synthetic import _sample_resumable

    _, ema, _ = trained
    sch = make_scheduler(TINY)
    smp = SampleConfig(n=7, steps=2, batch_size=2, seed=3)
    whole = sample(ema, sch, 7, steps=2, batch_size=2, seed=3, progress=False)
    part = tmp_path / 'p.pt'
    save_samples(part, whole[:4])  # a killed run had drawn 4
    got = _sample_resumable(ema, sch, smp, part, progress=False)
    assert torch.equal(got, whole) and torch.equal(load_samples(part)[0], whole)


def test_ddpm_holdout_is_chapter_11s_split():
    """The DDPM leaves out chapter 11's test digits: its copy of the split sizes must be chapter 11's own."""
    from kdnotes.ddpm import FIDELITY_SPLITS
    from kdnotes.fidelity import FidelityConfig
    cfg = FidelityConfig()
    assert FIDELITY_SPLITS == {'teacher': cfg.teacher_per_class, 'test': cfg.test_per_class, 'pool': None}
