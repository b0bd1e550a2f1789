"""One lent-GPU command: a fail-fast probe of every GPU entry point, then the next unfinished experiment unit.

Run on the device through tools/gpu_task.sh (see tools/GPU_TASK.md); here, `make gpu-dry-run` runs this
script on the CPU at tiny size (CI runs it, so it keeps working between lent GPU sessions).

  1. probe: bf16/channels-last step vs fp32, compiled vs eager, packed K models vs separate ones, a resume
     of `fit` on the device, a diffusers UNet train + sample step; the first failure stops the script
     (exit 2) and is reported. Then a calibration: seconds per epoch of the units' network, packed
     efficiency, DDPM steps/s and sampling speed.
  2. the next unit without a complete record in nbs/results/gpu/ (U1 speed, U2 self-distillation with
     synthetic data, U3 the same with a 3-member ensemble teacher, U4 ensemble sizes 1, 2, 3, 5), scaled
     to the time left from the calibration, saving its record after every piece into $OUT/results.tar
     (so a killed command returns what finished).

Records: nbs/results/gpu/U<n>-<hash>.json (one per unit; "complete": true when every piece ran) and
probe-<hash>.json, each with provenance (GPU, torch, git commit from KDNOTES_GIT_COMMIT, time) and the
plan it ran (epochs, sizes, seeds).
"""

from __future__ import annotations
import argparse, copy, hashlib, json, math, os, subprocess, sys, tarfile, tempfile, time, traceback
from dataclasses import dataclass, asdict, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the device has no installed kdnotes: import it from the checkout

import torch
import torch.nn.functional as F
from kdnotes.data import Split, DeviceLoader, augment, cifar10
from kdnotes.train import (TrainConfig, fit, ce_loss, predict, evaluate, pick_device, seed_everything,
                           teacher_seed, student_seed)
from kdnotes.models import get_model
from kdnotes.distill import DistillConfig
from kdnotes.metrics import agreement, predictive_kl
from kdnotes.experiments import provenance, write_json, check_commit
from kdnotes.packing import (maybe_compile, train_packed, distill_packed, Packed, EnsembleGroups,
                             relative_state_gap)
from kdnotes.pipelines import FastConfig, fast_recipe, fast_train, eager
from kdnotes.fast import CIFAR_AUG, BenchConfig, bench_speed, bench_packed, fake_cifar
from kdnotes.cifar import TEACHER_FORWARD  # a forward pass, in units of a training step

UNITS = ('U1', 'U2', 'U3', 'U4')
MIN_BUDGET = 200  # seconds: imports, probe and calibration take about 60-90 s on the GPU, a unit wants 100+
RESULTS = ROOT / 'nbs' / 'results' / 'gpu'


# ---------------------------------------------------------------- scale: the GPU plan and the CPU dry run
@dataclass
class Scale:
    "Everything that differs between the GPU command and the CPU dry run."

    device: str = 'cuda'
    data: str = 'cifar10'  # 'cifar10' (JPEG q75 copy) or 'fake' (random images of CIFAR shape, dry run)
    arch: str = 'resnet20'  # network of U2-U4 (ResNet-56 in the paper: ResNet-20 fits the 8-minute unit)
    bench_arch: str = 'resnet56'  # network of U1 (the targets are for ResNet-56)
    bench_k: int = 4  # U1: models per packed step
    bench_repeats: int = 2  # U1: timed epochs after one warm-up epoch
    batch_size: int = 512
    max_epochs: int = 40  # cap of the epochs chosen from the measured speed
    calib_images: int = 10_240  # images of the calibration epochs
    bench_images: int = 25_000  # U1: images per timed epoch
    bench_workers: int = 8  # U1: baseline DataLoader workers (16 cores on the device)
    bench_compile: str = 'default'  # U1: torch.compile mode of the fast path
    ddpm_channels: tuple = (32, 64, 128)
    ddpm_batch: int = 256
    ddpm_seconds: float = 75.0  # DDPM training per unit (U2, U3), step-budgeted from the measured speed
    ddpm_calib_steps: int = 101  # calibration: steps 1 (warm-up) to the last synced one (history every 50)
    sample_steps: int = 10  # DDIM steps per synthetic image
    sample_batch: int = 1000
    n_synth: tuple = (0, 12_500, 25_000, 50_000)  # synthetic images added (U2, U3)
    ens_sizes: tuple = (1, 2, 3, 5)  # U4
    budget: float = 480.0  # seconds for the whole command from the start of gpu_task.sh (kill: budget + 40)
    probe_arch: str = 'resnet20'
    probe_batch: int = 64  # images per probe step


DRY = Scale(
    device='cpu',
    data='fake',
    arch='resnet8',
    bench_arch='lenet5',
    bench_k=2,
    bench_repeats=1,
    batch_size=64,
    max_epochs=1,
    calib_images=128,
    bench_images=128,
    bench_workers=0,
    bench_compile='off',
    ddpm_channels=(8, 16),
    ddpm_batch=16,
    ddpm_seconds=1.0,
    ddpm_calib_steps=4,
    sample_steps=2,
    sample_batch=64,
    n_synth=(0, 64),
    ens_sizes=(1, 2),
    budget=170.0,
    probe_arch='resnet8',
    probe_batch=16,
)


# ---------------------------------------------------------------- logging and saving as we go
class Log:
    "Print and append to $OUT/log.txt, with seconds since the start."

    def __init__(self, out: Path):
        # the clock starts with tools/gpu_task.sh (its unpacking and install count against the budget)
        since = time.time() - float(os.environ.get('KDNOTES_TASK_T0') or time.time())
        self.path, self.t0 = out / 'log.txt', time.perf_counter() - max(0.0, since)

    def __call__(self, *msg):
        line = f'[{time.perf_counter() - self.t0:7.1f}s] ' + ' '.join(map(str, msg))
        print(line, flush=True)
        with open(self.path, 'a') as f:
            f.write(line + '\n')

    def left(self, budget: float) -> float:
        return budget - (time.perf_counter() - self.t0)


def commit() -> str:
    "The commit of the code that runs: $KDNOTES_GIT_COMMIT (the device has no .git), else git here."
    if os.environ.get('KDNOTES_GIT_COMMIT'):
        return os.environ['KDNOTES_GIT_COMMIT']
    try:
        return (
            subprocess.run(
                ['git', 'rev-parse', 'HEAD'], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or 'unknown'
        )
    except (OSError, subprocess.SubprocessError):
        return 'unknown'


def short_hash(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


class Saver:
    "Records kept in `work/`; after every save, all are packed into $OUT/results.tar (atomically)."

    def __init__(self, out: Path, work: Path):
        self.out, self.work = out, work
        work.mkdir(parents=True, exist_ok=True)

    def save(self, name: str, record: dict) -> Path:
        p = write_json(self.work / name, record)  # strict JSON (NaN -> null), atomic
        self.pack()
        return p

    def pack(self):
        tmp = self.out / 'results.tar.tmp'
        with tarfile.open(tmp, 'w') as tar:
            for f in sorted(self.work.glob('*.json')):
                tar.add(f, arcname=f'nbs/results/gpu/{f.name}')
        os.replace(tmp, self.out / 'results.tar')


def new_record(unit: str, scale: Scale, plan: dict) -> dict:
    prov = provenance() | dict(git_commit=commit(), hostname_cpus=os.cpu_count())
    return dict(
        unit=unit,
        complete=False,
        plan=plan,
        scale=asdict(scale),
        provenance=prov,
        pieces={},
        wall_seconds=0.0,
    )


# ---------------------------------------------------------------- data
def load(scale: Scale) -> dict:
    "Training and test images (uint8) on the CPU."
    if scale.data == 'fake':
        d = fake_cifar(128, 64, seed=0)  # two batches of the dry run's 64: every code path, little compute
        return {'train': d['train'], 'test': d['test']}
    return cifar10()


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    "‖a − b‖ / ‖b‖ in float64."
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


# ---------------------------------------------------------------- 1. probe
def _probe_bf16(scale, data, dev):
    "One training step's loss and gradients with bf16 autocast + channels-last against fp32."
    torch.manual_seed(0)
    m = make_model(scale.probe_arch, (3, 32, 32)).to(dev)
    x = augment(data['train'].x[: scale.probe_batch].to(dev), CIFAR_AUG, train=False)
    y = data['train'].y[: scale.probe_batch].to(dev)

    def grads(low):
        mm = copy.deepcopy(m)
        xx = x.contiguous(memory_format=torch.channels_last) if low and dev.type == 'cuda' else x
        if low and dev.type == 'cuda':
            mm = mm.to(memory_format=torch.channels_last)
        with torch.autocast('cuda', dtype=torch.bfloat16, enabled=low and dev.type == 'cuda'):
            loss = F.cross_entropy(mm(xx).float(), y)
        loss.backward()
        return loss.detach(), torch.cat([p.grad.flatten() for p in mm.parameters()])

    (l32, g32), (l16, g16) = grads(False), grads(True)
    cos = F.cosine_similarity(g32.double(), g16.double(), dim=0).item()
    out = dict(
        loss_fp32=l32.item(),
        loss_bf16=l16.item(),
        loss_rel=abs(l16.item() - l32.item()) / abs(l32.item()),
        grad_cosine=cos,
        bf16_active=dev.type == 'cuda',
    )
    out['ok'] = math.isfinite(out['loss_bf16']) and out['loss_rel'] < 2e-2 and cos > 0.98
    return out


def _probe_compile(scale, data, dev):
    "Compiled against eager: outputs and gradients of one training-mode step (fp32; eager backend when dry)."
    torch.manual_seed(1)
    m = make_model(scale.probe_arch, (3, 32, 32)).to(dev)
    c = copy.deepcopy(m)
    if dev.type == 'cuda':
        maybe_compile(c, 'default', dev)
    else:
        c.compile(
            backend='eager'
        )  # Inductor on 2 CPU cores would take minutes; this still traces with dynamo
    x = augment(data['train'].x[: scale.probe_batch].to(dev), CIFAR_AUG, train=False)
    y = data['train'].y[: scale.probe_batch].to(dev)
    outs = []
    for mm in (m, c):
        z = mm(x)
        F.cross_entropy(z, y).backward()
        outs.append((z.detach(), torch.cat([p.grad.flatten() for p in mm.parameters()])))
    with eager(c):
        eager_ok = c._compiled_call_impl is None
    out = dict(
        out_rel=rel(outs[1][0], outs[0][0]), grad_rel=rel(outs[1][1], outs[0][1]), eager_context=eager_ok
    )
    out['ok'] = out['out_rel'] < 1e-2 and out['grad_rel'] < 5e-2 and eager_ok
    return out


def _probe_packed(scale, data, dev):
    "K=3 models packed (vmap) against the same three trained separately: one step on one batch."
    k, n = 3, 2 * scale.batch_size if dev.type == 'cuda' else 2 * scale.probe_batch
    inits = []
    for s in range(k):
        torch.manual_seed(s)
        inits.append(make_model(scale.probe_arch, (3, 32, 32)))
    train = data['train'][:n]
    cfg = TrainConfig(epochs=1, batch_size=n, lr=0.05, seed=0, device=str(dev), progress=False)
    separate = [copy.deepcopy(mdl) for mdl in inits]
    for mdl in separate:
        seed_everything(0)
        fit(mdl, DeviceLoader(train, n, CIFAR_AUG, device=dev, seed=0), cfg)
    packed, _ = train_packed([copy.deepcopy(mdl) for mdl in inits], train, cfg, CIFAR_AUG, method='vmap')
    gaps = [relative_state_gap(a.cpu(), b.cpu(), m0) for a, b, m0 in zip(separate, packed, inits)]
    x = augment(train.x[:32].to(dev), CIFAR_AUG, train=False)
    pk = Packed([mdl.to(dev).eval() for mdl in separate]).eval()
    with torch.no_grad():
        fwd = rel(pk(x), torch.stack([mdl(x) for mdl in separate]))
    return dict(state_gap=gaps, forward_rel=fwd, ok=max(gaps) < 0.05 and fwd < 1e-3)


class _Stop(Exception):
    pass


def _probe_resume(scale, data, dev, tmp: Path):
    "`fit` for 2 epochs straight against 1 epoch, a crash, and a resume from the checkpoint, on the device."
    b = scale.probe_batch
    train = data['train'][: 4 * b]  # 4 steps per epoch
    cfg = TrainConfig(epochs=2, batch_size=b, lr=0.05, seed=0, device=str(dev), progress=False)

    def run(ckpt, crash_after=None):
        torch.manual_seed(0)
        mdl = make_model(scale.probe_arch, (3, 32, 32))
        calls = [0]

        def loss(z, x, y):
            calls[0] += 1
            if crash_after is not None and calls[0] > crash_after:
                raise _Stop
            return ce_loss(z, x, y)

        seed_everything(0)
        try:
            hist = fit(mdl, DeviceLoader(train, b, CIFAR_AUG, device=dev, seed=0), cfg, loss, ckpt)
        except _Stop:
            return mdl, None
        return mdl, hist

    straight, _ = run(tmp / 'a.pt')
    run(tmp / 'b.pt', crash_after=4)  # dies in its second epoch, after the first epoch's checkpoint
    resumed, hist = run(tmp / 'b.pt')  # starts at epoch 1 from the checkpoint
    gap = max(
        (a - b).abs().max().item()
        for a, b in zip(straight.state_dict().values(), resumed.state_dict().values())
        if a.is_floating_point()
    )
    ok = (
        hist is not None
        and [h['epoch'] for h in hist] == [0, 1]
        and (gap < 1e-2 if dev.type == 'cuda' else gap == 0.0)
    )
    return dict(epochs=[h['epoch'] for h in hist] if hist else None, max_state_diff=gap, ok=ok)


def _probe_diffusers(scale, data, dev):
    "A diffusers UNet2DModel: two training steps with EMA, and two DDIM-sampled images, finite and uint8."
    import diffusers
    from kdnotes.ddpm import DDPMConfig, train_ddpm, sample, make_scheduler

    cfg = DDPMConfig(
        dataset='cifar10',
        channels=tuple(scale.ddpm_channels),
        layers_per_block=1,
        attention=False,
        batch_size=8,
        time_budget=600,
        max_steps=2,
        warmup_steps=1,
        device=str(dev),
    )
    unet, ema, hist = train_ddpm(data['train'].x[:64], cfg, progress=False)
    x = sample(ema, make_scheduler(cfg), 2, steps=2, batch_size=2, progress=False)
    return dict(
        diffusers=diffusers.__version__,
        diffusers_path=str(Path(diffusers.__file__).parent),
        loss=hist[-1]['loss'],
        sample_shape=list(x.shape),
        ok=math.isfinite(hist[-1]['loss']) and x.dtype == torch.uint8 and tuple(x.shape) == (2, 3, 32, 32),
    )


# diffusers first: on the device its import also pulls in the preinstalled transformers, accelerate and peft,
# a path the CPU venv never takes, and it costs seconds, not minutes
PROBES = (
    ('diffusers', _probe_diffusers),
    ('bf16_channels_last', _probe_bf16),
    ('packed', _probe_packed),
    ('resume', _probe_resume),
)
COMPILE_PROBE = ('compile', _probe_compile)  # only U1 compiles: its failure skips U1, never the others


def _run_probe(name, fn, scale, data, dev, tmp, log) -> dict:
    "One probe; an exception becomes a failed result with its traceback."
    t0 = time.perf_counter()
    try:
        res = fn(scale, data, dev, tmp) if name == 'resume' else fn(scale, data, dev)
    except Exception as e:
        res = dict(ok=False, error=f'{type(e).__name__}: {e}'[:800], traceback=traceback.format_exc()[-2000:])
    res['seconds'] = round(time.perf_counter() - t0, 2)
    shown = {k: v for k, v in res.items() if k != 'traceback'}
    log(f'probe {name}: {"ok" if res["ok"] else "FAILED"}', shown)
    return res


def probe(scale: Scale, data: dict, log: Log, tmp: Path, compile_check: bool = True) -> dict:
    "Run the probes every unit needs in order, stopping at the first failure; then the compile probe."
    dev, out = pick_device(scale.device), {}
    for name, fn in PROBES:
        out[name] = _run_probe(name, fn, scale, data, dev, tmp, log)
        if not out[name]['ok']:
            return out
    if compile_check:
        out['compile'] = _run_probe(*COMPILE_PROBE, scale, data, dev, tmp, log)
    return out


def calibrate(scale: Scale, data: dict, log: Log) -> dict:
    "Seconds per full epoch of the units' network (fast path), packed efficiency, DDPM and sampling speed."
    from kdnotes.ddpm import DDPMConfig, train_ddpm, sample, make_scheduler

    dev, N = pick_device(scale.device), len(data['train'])
    sub = data['train'][: min(scale.calib_images, N)]
    fc = FastConfig(batch_size=scale.batch_size, compile='off')
    torch.manual_seed(0)
    h1 = fast_train(make_model(scale.arch, (3, 32, 32)), sub, 2, fc, CIFAR_AUG, device=str(dev))
    used = len(sub) // scale.batch_size * scale.batch_size or len(sub)
    e1 = h1[-1]['seconds'] * N / used
    cfg = fast_recipe(2, fc, device=str(dev), progress=False)
    _, h4 = train_packed([make_model(scale.arch, (3, 32, 32)) for _ in range(4)], sub, cfg, CIFAR_AUG)
    p4 = h4[-1]['seconds'] * N / used / (4 * e1)  # packed K=4 epoch over 4 single epochs
    dc = DDPMConfig(
        dataset='cifar10',
        channels=tuple(scale.ddpm_channels),
        layers_per_block=1,
        attention=False,
        batch_size=scale.ddpm_batch,
        time_budget=600,
        max_steps=scale.ddpm_calib_steps,
        warmup_steps=1,
        device=str(dev),
    )
    _, ema, hist = train_ddpm(data['train'].x[:4096], dc, progress=False)
    # step 1 pays for the lazy start (cuDNN plans, allocator); time from it to the last entry `train_ddpm`
    # took with a device sync (every 50th step), not to the end (the host may run ahead of the GPU)
    synced = [h for h in hist[1:] if h['step'] % 50 == 0] or hist[-1:]
    a, b = hist[0], synced[-1]
    ddpm_rate = (b['step'] - a['step']) / max(b['seconds'] - a['seconds'], 1e-6)
    sched = make_scheduler(dc)
    sample(ema, sched, 8, steps=1, batch_size=8, progress=False)  # warm-up: the first call's set-up untimed
    t0 = time.perf_counter()
    sample(ema, sched, scale.sample_batch, steps=2, batch_size=scale.sample_batch, progress=False)
    per_image_step = (time.perf_counter() - t0) / (2 * scale.sample_batch)
    out = dict(
        epoch_seconds=e1,
        packed4_efficiency=p4,
        ddpm_steps_per_s=ddpm_rate,
        ddpm_calib_steps=b['step'] - a['step'],
        sample_seconds_per_image_step=per_image_step,
    )
    log('calibration', {k: round(v, 5) for k, v in out.items()})
    return out


def make_model(arch, in_shape):
    "A fresh 10-class network by name (kdnotes.models)."
    return get_model(arch, 10, in_shape)


# ---------------------------------------------------------------- 2. units
def _teachers(scale, data, seeds, epochs, dev):
    "Teachers of the given seeds, trained together (vmap-packed), with test accuracy and NLL."
    inits = []
    for s in seeds:
        torch.manual_seed(s)
        inits.append(make_model(scale.arch, (3, 32, 32)))
    cfg = fast_recipe(
        epochs,
        FastConfig(batch_size=scale.batch_size, compile='off'),
        seed=seeds[0],
        device=str(dev),
        progress=False,
    )
    models, hist = train_packed(inits, data['train'], cfg, CIFAR_AUG)
    return models, [dict(seed=s) | evaluate(m, data['test'], CIFAR_AUG) for s, m in zip(seeds, models)], hist


def _student_init(scale, replicate):
    "The student of `replicate`: from `student_seed`, never where one of its teachers starts."
    torch.manual_seed(student_seed(replicate))
    return make_model(scale.arch, (3, 32, 32))


def _teacher_seeds(members):
    "Members 0..members-1 of replicates 0 and 1, by the core's one seed rule (s + 100 j)."
    return [teacher_seed(r, member=j) for r in range(2) for j in range(members)]


def _distill_pair(scale, data, teacher, epochs, dev, extra, seeds=(0, 1)):
    "Students of replicates `seeds`, distilled packed from `teacher` (one per student, or EnsembleGroups)."
    dcfg = DistillConfig(
        T=4.0,
        train=fast_recipe(
            epochs,
            FastConfig(batch_size=scale.batch_size, compile='off'),
            seed=seeds[0],
            device=str(dev),
            progress=False,
        ),
    )
    students, res = distill_packed(
        teacher,
        [_student_init(scale, s) for s in seeds],
        data['train'],
        data['test'],
        dcfg,
        CIFAR_AUG,
        extra_x=extra,
    )
    return students, res


def _pair_records(teachers, students, res, test, extra=None) -> list[dict]:
    "Per replicate: accuracy, fidelity, and the control (this teacher against the other replicate's student)."
    t_logits = [predict(t, test, CIFAR_AUG) for t in teachers]
    s_logits = [predict(s, test, CIFAR_AUG) for s in students]
    out = []
    for r in range(len(students)):
        others = [o for o in range(len(students)) if o != r]
        rec = {k: v for k, v in res[r].items() if k != 'history'} | dict(
            replicate=r, final_loss=res[r]['history'][-1]['loss']
        )
        rec['control_agreement'] = sum(agreement(t_logits[r], s_logits[o]) for o in others) / max(
            1, len(others)
        )
        if extra is not None and len(extra):
            rec['synth_agreement'] = agreement(
                predict(teachers[r], extra, CIFAR_AUG), predict(students[r], extra, CIFAR_AUG)
            )
        out.append(rec)
    return out


def _epochs_for(seconds: float, per_epoch: float, scale: Scale) -> int:
    return max(1, min(scale.max_epochs, int(seconds / max(per_epoch, 1e-9))))


def _ddpm_and_samples(scale, data, dev, seconds, n, calib, log):
    "A small DDPM (step-budgeted, EMA) on the training images, and `n` DDIM samples (uint8)."
    from kdnotes.ddpm import DDPMConfig, train_ddpm, sample, make_scheduler

    steps = max(10, int(seconds * calib['ddpm_steps_per_s']))
    cfg = DDPMConfig(
        dataset='cifar10',
        channels=tuple(scale.ddpm_channels),
        layers_per_block=1,
        attention=False,
        lr=5e-4,
        warmup_steps=min(200, steps // 5),
        batch_size=scale.ddpm_batch,
        time_budget=1.5 * seconds,
        max_steps=steps,
        ema_decay=0.999,
        device=str(dev),
    )
    t0 = time.perf_counter()
    _, ema, hist = train_ddpm(data['train'].x, cfg, progress=False)
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    x = (
        sample(
            ema,
            make_scheduler(cfg),
            n,
            steps=scale.sample_steps,
            batch_size=scale.sample_batch,
            progress=False,
        )
        if n
        else torch.zeros(0, 3, 32, 32, dtype=torch.uint8)
    )
    info = dict(
        config=asdict(cfg),
        steps=hist[-1]['step'],
        final_loss=hist[-1]['loss'],
        loss_curve=hist[:: max(1, len(hist) // 20)],
        train_seconds=round(t_train, 1),
        sample_seconds=round(time.perf_counter() - t0, 1),
        n=len(x),
        sample_steps=scale.sample_steps,
        mean_pixel=x.float().mean().item() if len(x) else None,
    )
    log('DDPM', {k: v for k, v in info.items() if k not in ('config', 'loss_curve')})
    return x, info


def unit_speed(scale, data, calib, log, saver, rec, budget) -> dict:
    "U1: the DataLoader fp32 pipeline vs the fast path (compiled); packed K=4 vs 4 sequential runs."
    bc = BenchConfig(
        model=scale.bench_arch,
        dataset=scale.data,
        images=min(scale.bench_images, len(data['train'])),
        batch_size=scale.batch_size,
        device=scale.device,
        workers=scale.bench_workers,
        compile=scale.bench_compile,
        k=scale.bench_k,
        repeats=scale.bench_repeats,
        progress=False,
    )
    d = {'train': data['train'][: bc.images], 'test': data['test'][:1000]}
    rec['plan'] |= dict(bench=asdict(bc))
    rec['pieces']['speed'] = bench_speed(bc, d)
    saver.save(rec['file'], rec)
    log('U1 speed', _short(rec['pieces']['speed']))
    if log.left(budget) > 60:
        pk = bench_packed(
            replace(bc, compile='off'), d, methods=('vmap',)
        )  # one graph per variant; compile measured above
        rec['pieces']['packed'] = pk
        saver.save(rec['file'], rec)
        log('U1 packed', _short(pk))
    if log.left(budget) > 30:
        try:  # a profiler error must not throw away a finished U1: the table is a nicety
            rec['pieces']['profile'] = _profile(bc, d)
        except Exception as e:
            rec['pieces']['profile_error'] = f'{type(e).__name__}: {e}'[:500]
            log('U1 profile FAILED (U1 stays complete):', rec['pieces']['profile_error'])
        saver.save(rec['file'], rec)
    sp, pk = rec['pieces'].get('speed', {}), rec['pieces'].get('packed', {})
    errors = [
        f'{part}.{k}: {v["error"]}'
        for part in ('speed', 'packed')
        for k, v in rec['pieces'].get(part, {}).items()
        if isinstance(v, dict) and 'error' in v
    ]
    if errors:
        raise RuntimeError('; '.join(errors))  # recorded; the unit is not complete
    rec['targets'] = dict(
        fast_speedup=sp.get('speedup'),
        fast_cifar10_epoch_seconds=sp.get('fast', {}).get('cifar10_epoch_seconds'),
        packed_speedup=pk.get('speedup'),
        want=dict(fast_speedup='>= 4', fast_cifar10_epoch_seconds='<= 1', packed_speedup='>= 2'),
    )
    return rec


def _short(d: dict) -> dict:
    return {
        k: (round(v, 3) if isinstance(v, float) else _short(v) if isinstance(v, dict) else v)
        for k, v in d.items()
        if k not in ('values',)
    }


def _profile(bc: BenchConfig, d: dict) -> str:
    "Where the fast path's time goes: the profiler's top operators over a few steps (eager, bf16 on CUDA)."
    dev = pick_device(bc.device)
    torch.manual_seed(0)
    m = make_model(bc.model, (3, 32, 32)).to(dev)
    if dev.type == 'cuda':
        m = m.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    loader = DeviceLoader(
        d['train'], bc.batch_size, CIFAR_AUG, device=dev, seed=0, drop_last=len(d['train']) >= bc.batch_size
    )
    acts = [torch.profiler.ProfilerActivity.CPU] + (
        [torch.profiler.ProfilerActivity.CUDA] if dev.type == 'cuda' else []
    )
    with torch.profiler.profile(activities=acts) as prof:
        for i, (xb, yb) in enumerate(loader):
            if i == 6:
                break
            with torch.autocast('cuda', dtype=torch.bfloat16, enabled=dev.type == 'cuda'):
                loss = F.cross_entropy(m(xb).float(), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if dev.type == 'cuda':
            torch.cuda.synchronize()
    key = 'self_cuda_time_total' if dev.type == 'cuda' else 'self_cpu_time_total'
    return prof.key_averages().table(sort_by=key, row_limit=15, max_name_column_width=50)


def unit_synthetic(scale, data, calib, log, saver, rec, budget, ensemble: bool) -> dict:
    "U2 (one teacher) / U3 (3-member ensemble): teacher and control, a DDPM, students at several sizes."
    dev, N = pick_device(scale.device), len(data['train'])
    m = 3 if ensemble else 1
    sizes = tuple(n for n in scale.n_synth if n <= 50_000)
    n_max = max(sizes)
    # seconds: DDPM training + sampling are fixed; teachers (2m) and students (2 per size) scale with epochs
    sample_s = n_max * scale.sample_steps * calib['sample_seconds_per_image_step']
    fixed = scale.ddpm_seconds + sample_s + 15
    e1, p = calib['epoch_seconds'], max(calib['packed4_efficiency'], 0.25)
    per_epoch = 2 * m * e1 * p + sum((1 + n / N) * (2 + TEACHER_FORWARD * 2 * m) * e1 * p for n in sizes)
    epochs = _epochs_for((log.left(budget) - fixed) / 1.2, per_epoch, scale)
    rec['plan'] |= dict(
        epochs=epochs,
        n_synth=list(sizes),
        teacher_members=m,
        replicates=2,
        teacher_seeds=[_teacher_seeds(m)[r * m:(r + 1) * m] for r in range(2)],
        student_seeds=[student_seed(r) for r in range(2)],
        T=4.0,
        alpha=0.0,
        arch=scale.arch,
        predicted_seconds=round(fixed + 1.2 * epochs * per_epoch, 1),
    )
    log(f"{rec['unit']} plan", rec['plan'])
    models, trec, _ = _teachers(scale, data, _teacher_seeds(m), epochs, dev)
    rec['pieces']['teachers'] = trec
    saver.save(rec['file'], rec)
    log('teachers', [round(t['acc'], 4) for t in trec])
    teachers = [models[0], models[1]] if not ensemble else EnsembleGroups(models, [[0, 1, 2], [3, 4, 5]])
    per_rep = teachers if not ensemble else teachers.ensembles()
    rec['pieces']['teacher_acc'] = [evaluate(t, data['test'], CIFAR_AUG)['acc'] for t in per_rep]
    synth, info = _ddpm_and_samples(scale, data, dev, scale.ddpm_seconds, n_max, calib, log)
    from kdnotes.metrics import sample_quality

    if len(synth):
        info['quality'] = sample_quality(
            predict(per_rep[0], synth, CIFAR_AUG), predict(per_rep[0], data['test'], CIFAR_AUG)
        )
    rec['pieces']['ddpm'] = info
    rec['pieces']['students'] = []
    saver.save(rec['file'], rec)
    for n in sizes:
        extra = synth[:n] if n else None
        students, res = _distill_pair(scale, data, teachers, epochs, dev, extra)
        for r in _pair_records(per_rep, students, res, data['test'], extra):
            rec['pieces']['students'].append(r | dict(n_synth=n))
        saver.save(rec['file'], rec)
        log(
            f'students n_synth={n}',
            [
                (round(r['student_acc'], 4), round(r['agreement'], 4), round(r['control_agreement'], 4))
                for r in rec['pieces']['students'][-2:]
            ],
        )
    return rec


def unit_ensemble(scale, data, calib, log, saver, rec, budget) -> dict:
    "U4: ensembles of 1, 2, 3, 5 nested members, two replicates, one student per size and replicate."
    dev, sizes = pick_device(scale.device), tuple(scale.ens_sizes)
    M = max(sizes)
    e1, p = calib['epoch_seconds'], max(calib['packed4_efficiency'], 0.25)
    per_epoch = 2 * M * e1 * p + (2 * len(sizes) + TEACHER_FORWARD * 2 * M) * e1 * p
    epochs = _epochs_for((log.left(budget) - 15) / 1.2, per_epoch, scale)
    groups = [list(range(r * M, r * M + k)) for r in range(2) for k in sizes]  # replicate-major
    rec['plan'] |= dict(
        epochs=epochs,
        sizes=list(sizes),
        replicates=2,
        groups=groups,
        T=4.0,
        alpha=0.0,
        arch=scale.arch,
        predicted_seconds=round(15 + 1.2 * epochs * per_epoch, 1),
    )
    log('U4 plan', rec['plan'])
    models, trec, _ = _teachers(scale, data, _teacher_seeds(M), epochs, dev)
    rec['pieces']['teachers'] = trec
    saver.save(rec['file'], rec)
    log('teachers', [round(t['acc'], 4) for t in trec])
    eg = EnsembleGroups(models, groups)
    seeds = [r for r in range(2) for k in sizes]  # replicates: a replicate's students start alike
    dcfg = DistillConfig(
        T=4.0,
        train=fast_recipe(
            epochs,
            FastConfig(batch_size=scale.batch_size, compile='off'),
            seed=0,
            device=str(dev),
            progress=False,
        ),
    )
    students, res = distill_packed(
        eg, [_student_init(scale, s) for s in seeds], data['train'], data['test'], dcfg, CIFAR_AUG
    )
    ens = eg.ensembles()
    t_logits = [predict(t, data['test'], CIFAR_AUG) for t in ens]
    s_logits = [predict(s, data['test'], CIFAR_AUG) for s in students]
    rows = []
    for i, (g, r) in enumerate(zip(groups, res)):
        rep, k = i // len(sizes), len(g)
        j = (1 - rep) * len(sizes) + i % len(sizes)  # the same size in the other replicate: the control
        rows.append(
            {kk: v for kk, v in r.items() if kk != 'history'}
            | dict(replicate=rep, members=k, control_agreement=agreement(t_logits[i], s_logits[j]))
        )
    rec['pieces']['students'] = rows
    return rec


# ---------------------------------------------------------------- main
def done_units(results: Path) -> set:
    "Units with a committed record marked complete."
    out = set()
    for p in results.glob('U*-*.json'):
        try:
            rec = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if rec.get('complete'):
            out.add(rec['unit'])
    return out


def next_unit(results: Path, skip: tuple = ()) -> str | None:
    "The first unit without a complete record, other than those in `skip`."
    done = done_units(results) | set(skip)
    return next((u for u in UNITS if u not in done), None)


def run_unit(unit, scale, data, calib, log, saver, budget) -> dict:
    plan = dict(version=1, unit=unit)
    rec = new_record(unit, scale, plan)
    rec['file'] = f'{unit}-{short_hash([plan, scale.data, scale.arch])}.json'
    t0 = time.perf_counter()
    try:
        if unit == 'U1':
            unit_speed(scale, data, calib, log, saver, rec, budget)
        elif unit in ('U2', 'U3'):
            unit_synthetic(scale, data, calib, log, saver, rec, budget, ensemble=unit == 'U3')
        else:
            unit_ensemble(scale, data, calib, log, saver, rec, budget)
        rec['complete'] = True
    except Exception as e:
        rec['error'] = f'{type(e).__name__}: {e}'[:800]
        rec['traceback'] = traceback.format_exc()[-3000:]
        log(f'{unit} FAILED:', rec['error'])
    rec['wall_seconds'] = round(time.perf_counter() - t0, 1)
    rec['calibration'] = calib
    saver.save(rec['file'], rec)
    log(
        f"{unit} {'complete' if rec['complete'] else 'INCOMPLETE'} in {rec['wall_seconds']} s"
        f" -> {rec['file']}"
    )
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        '--out',
        default=os.environ.get('OUT') or 'runs/gpu_task',
        help='where log.txt, probe.json and results.tar go ($OUT on the device)',
    )
    ap.add_argument(
        '--dry-run',
        action='store_true',
        help='the same script on the CPU at tiny size (random images), every unit',
    )
    ap.add_argument(
        '--unit',
        default='next',
        help="'next' (first unit without a complete record in --results), 'all', 'none' (probe only), U1..U4",
    )
    ap.add_argument(
        '--budget',
        type=float,
        default=None,
        help='seconds for the whole command, counted from the start of tools/gpu_task.sh, which kills at the'
        ' budget + 40 s (default 480 on the GPU, 170 dry); the unit is planned to end inside it',
    )
    ap.add_argument(
        '--results', default=str(RESULTS), help='committed unit records, read to pick the next unit'
    )
    args = ap.parse_args(argv)
    if args.unit not in ('next', 'all', 'none') + UNITS:
        ap.error(f"--unit must be next, all, none or one of {UNITS}")
    scale = DRY if args.dry_run else Scale()
    budget = args.budget or scale.budget
    if budget <= 0:
        ap.error('--budget must be > 0 seconds')
    if not args.dry_run and budget < MIN_BUDGET:
        ap.error(f'--budget {budget:g} s leaves no room for a unit after the probe and calibration; '
                 f'give at least {MIN_BUDGET} s (device time left, less the machine start)')
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = Log(out)
    if not args.dry_run and not torch.cuda.is_available():
        log('no GPU visible: run with --dry-run on a CPU')
        return 2
    if not args.dry_run and not os.environ.get('KDNOTES_GIT_COMMIT'):
        log(
            'KDNOTES_GIT_COMMIT is not set: .git does not travel, so records would have no commit; '
            'run tools/gpu_task.sh as tools/prepare_gpu_task.sh prints it'
        )
        return 2
    check_commit(
        commit(), cuda=not args.dry_run
    )  # the same rule as ResultStore: no GPU result without its code's commit
    units = (
        list(UNITS)
        if args.unit == 'all'
        else (
            []
            if args.unit == 'none'
            else [next_unit(Path(args.results))] if args.unit == 'next' else [args.unit]
        )
    )
    units = [u for u in units if u]
    log(
        f"gpu_task: {'dry run (CPU)' if args.dry_run else 'GPU'}; units {units or 'none left'}; "
        f"budget {budget:.0f} s; commit {commit()}"
    )
    log('provenance', provenance() | dict(git_commit=commit()))
    if scale.device == 'cpu':
        # one thread: on a shared machine a second one spins against other jobs (10-100x slower under load)
        torch.set_num_threads(1)
    work = Path(
        tempfile.mkdtemp(prefix='gpu_task_')
    )  # not under $OUT: only a few files may come back from there
    saver = Saver(out, work)
    data = load(scale)
    log('data', scale.data, {k: tuple(v.x.shape) for k, v in data.items()})
    tmp = work / 'tmp'
    tmp.mkdir()
    pr = probe(scale, data, log, tmp, compile_check='U1' in units)
    failed = [k for k, v in pr.items() if not v['ok'] and k != 'compile']
    compile_failed = 'compile' in pr and not pr['compile']['ok']
    calib = {} if failed else calibrate(scale, data, log)
    prec = dict(
        kind='probe',
        ok=not failed,
        probes=pr,
        calibration=calib,
        provenance=provenance() | dict(git_commit=commit()),
        scale=asdict(scale),
    )
    write_json(out / 'probe.json', prec)
    saver.save(f"probe-{short_hash([scale.device, scale.data, prec['provenance']['time_utc']])}.json", prec)
    if failed:
        log(f'PROBE FAILED at {failed[0]}: {pr[failed[0]].get("error", pr[failed[0]])}')
        return 2
    failed_units = []
    if compile_failed:  # U1 waits for a fix; the units that do not compile go on
        log(f'compile probe FAILED: U1 skipped ({pr["compile"].get("error", pr["compile"])})')
        failed_units.append('U1')
        units = [u for u in units if u != 'U1']
        if args.unit == 'next':
            units = [u for u in [next_unit(Path(args.results), skip=('U1',))] if u]
        log(f'units now {units or "none left"}')
    for unit in units:
        # the dry run always runs every unit: that is its point
        if not args.dry_run and log.left(budget) < 60:
            log(f'{unit}: skipped, {log.left(budget):.0f} s left')
            break
        if 'error' in run_unit(unit, scale, data, calib, log, saver, budget):
            failed_units.append(unit)
    log(f'done; results in {out / "results.tar"} (extract at the repository root: tar -xf results.tar)')
    return 1 if failed_units else 0


if __name__ == '__main__':
    sys.exit(main())
