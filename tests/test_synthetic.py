"Tests of kdnotes.synthetic: tiny DDPMs on sklearn digits, offline."
import argparse, json
from dataclasses import replace
import pytest, torch
from kdnotes.data import digits, DeviceLoader, Split
from kdnotes.synthetic import (DDPMConfig, SampleConfig, make_unet, make_scheduler, ddpm_loss, ema_update, train_ddpm, sample,
                               save_samples, load_samples, sample_quality, plot_samples, plot_quality, load_pretrained, synthesize,
                               ddpm_data, add_cli)

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

def test_make_unet_checks():
    assert make_unet(TINY, (1, 8, 8))(torch.randn(2, 1, 8, 8), torch.tensor([0, 5])).sample.shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match='square'): make_unet(TINY, (1, 8, 6))
    with pytest.raises(ValueError, match='divisible'): make_unet(replace(TINY, channels=(8, 16, 32, 64)), (1, 12, 12))
    with pytest.raises(ValueError, match='choose'): ddpm_data('imagenet')

def test_loss_matches_closed_form():
    unet, sch = make_unet(TINY, (1, 8, 8)), make_scheduler(TINY)
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    loss = ddpm_loss(unet, sch, x0, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3); t = torch.randint(0, 1000, (4,), generator=g); eps = torch.randn(x0.shape, generator=g)
    ab = sch.alphas_cumprod[t][:, None, None, None]
    with torch.no_grad(): ref = ((eps - unet(ab.sqrt() * x0 + (1 - ab).sqrt() * eps, t).sample) ** 2).mean()
    assert torch.allclose(loss.detach(), ref, atol=1e-5)

def test_ema():
    a, b = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
    want = 0.5 * a.weight.detach() + 0.5 * b.weight.detach()
    ema_update(a, b, 0.5); assert torch.allclose(a.weight, want)
    with pytest.raises(ValueError, match='decay'): ema_update(a, b, -0.1)

def test_train_stops_at_max_steps(trained):
    unet, ema, hist = trained
    assert hist[-1]['step'] == 6 and all(torch.isfinite(torch.tensor(h['loss'])) for h in hist)

def test_train_resumes_and_respects_budget(tmp_path):
    x = digits().x[:64]; ck = tmp_path / 'd.pt'
    _, _, h1 = train_ddpm(x, replace(TINY, time_budget=0.5), ck, progress=False)
    _, _, h2 = train_ddpm(x, replace(TINY, time_budget=0.5), ck, progress=False)
    assert h2[-1]['step'] == h1[-1]['step']  # budget already spent: no more steps
    _, _, h3 = train_ddpm(x, replace(TINY, time_budget=1.5), ck, progress=False)
    assert h3[-1]['step'] > h1[-1]['step']

def test_sample_shapes_and_determinism(trained):
    _, ema, _ = trained; sch = make_scheduler(TINY)
    a = sample(ema, sch, 5, steps=3, batch_size=2, seed=7, progress=False)
    assert a.dtype == torch.uint8 and a.shape == (5, 1, 8, 8)
    assert torch.equal(a, sample(ema, sch, 5, steps=3, batch_size=2, seed=7, progress=False))
    assert sample(ema, sch, 2, steps=3, sampler='dpm', progress=False).shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match='ddim'): sample(ema, sch, 2, sampler='pndm')
    with pytest.raises(ValueError, match='n >= 1'): sample(ema, sch, 0)

def test_samples_file_roundtrip(tmp_path):
    x = torch.randint(0, 256, (4, 3, 4, 4), dtype=torch.uint8)
    save_samples(tmp_path / 's.pt', x, id='abc', cfg=TINY)
    back, meta = load_samples(tmp_path / 's.pt')
    assert torch.equal(back, x) and meta['id'] == 'abc' and meta['cfg']['channels'] == [8, 16]
    with pytest.raises(ValueError, match='uint8'): save_samples(tmp_path / 'f.pt', x.float())
    with pytest.raises(FileNotFoundError, match='kdnotes synth'): load_samples(tmp_path / 'missing.pt')

def test_quality_and_plots():
    q = sample_quality(torch.tensor([[5., 0.], [5., 0.]]), torch.tensor([[5., 0.], [0., 5.]]))
    assert q['synth_hist'] == [1.0, 0.0] and q['real_hist'] == [0.5, 0.5] and abs(q['hist_tv'] - 0.5) < 1e-9
    plot_quality(q); plot_samples(torch.rand(5, 1, 8, 8), 4)
    with pytest.raises(ValueError, match='needs labels'): plot_samples(torch.rand(5, 1, 8, 8), cls=1)

def test_samples_plug_into_loader(trained):
    _, ema, _ = trained
    s = sample(ema, make_scheduler(TINY), 6, steps=2, progress=False)
    d = digits()[:10]
    dl = DeviceLoader(d, batch_size=16, extra_x=s, shuffle=False)
    xb, yb = next(iter(dl))
    assert xb.shape == (16, 1, 8, 8) and (yb[10:] == -1).all() and xb.max() <= 1.0

def test_load_pretrained_local_dir_offline(tmp_path):
    from diffusers import DDPMPipeline
    DDPMPipeline(unet=make_unet(TINY, (1, 8, 8)), scheduler=make_scheduler(TINY)).save_pretrained(tmp_path / 'pipe')
    unet, sch = load_pretrained(str(tmp_path / 'pipe'), device='cpu')
    assert sample(unet, sch, 2, steps=2, progress=False).shape == (2, 1, 8, 8)
    with pytest.raises(FileNotFoundError, match='save_pretrained'): load_pretrained(str(tmp_path / 'nothing'))
    with pytest.raises(FileNotFoundError, match='huggingface-cli download'): load_pretrained('google/ddpm-cifar10-32-missing', local_files_only=True)

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


def test_configs_checked_before_any_training(tmp_path):
    from kdnotes.synthetic import check_synth_config

    OK = SampleConfig(n=4, steps=2)
    check_synth_config(TINY, OK)
    for ddpm, smp, msg in (
        (TINY, SampleConfig(n=0), '--n must be a whole number >= 1'),
        (TINY, SampleConfig(steps=0), '--steps must be a whole number >= 1'),
        (TINY, SampleConfig(steps=2000), 'exceeds the 1000 training timesteps'),
        (replace(TINY, channels=(8, 12)), OK, 'multiples of 8'),
        (replace(TINY, channels=(8, 16, 32, 64, 128)), OK, 'fewer channels entries'),
        (replace(TINY, time_budget=0), OK, '--time-budget'),
        (replace(TINY, dataset='svhn'), OK, 'unknown data set'),
        (TINY, SampleConfig(sampler='euler'), "choose 'ddim' or 'dpm'"),
    ):
        with pytest.raises(ValueError, match=msg):
            synthesize(ddpm, smp, tmp_path)
    assert not list(tmp_path.iterdir())  # failed before writing anything


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


def test_load_samples_names_a_file_that_is_not_a_sample_file(tmp_path):
    (tmp_path / 'a.pt').write_text('hello')
    with pytest.raises(ValueError, match='a.pt is not a sample file'):
        load_samples(tmp_path / 'a.pt')
    torch.save({'images': torch.zeros(2, 3)}, tmp_path / 'b.pt')
    with pytest.raises(ValueError, match='b.pt holds no uint8'):
        load_samples(tmp_path / 'b.pt')


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
