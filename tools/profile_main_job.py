"""Where the main job's time goes: `kdnotes fidelity`'s runs, one process, stage by stage.

Usage: .venv/bin/python tools/profile_main_job.py [--threads 1] [--sizes 100 1000 3800] [--seeds 0 1 2]
Runs the main job's configs serially into a fresh temporary store (teachers are trained, nothing is read from
a cache) with the training step instrumented: each stage's wall time is measured around the same calls the
package makes (no code path is changed), and the stages are printed as seconds, share and per-step cost.
"""
import argparse, collections, contextlib, dataclasses, sys, tempfile, time
from pathlib import Path

import torch

import kdnotes.data, kdnotes.train, kdnotes.distill, kdnotes.fidelity
from kdnotes.fidelity import FidelityConfig, fidelity_configs, fidelity_sweep

SECONDS = collections.Counter()
COUNTS = collections.Counter()
_stack = []  # stage names, innermost last: a stage's time excludes its nested stages


@contextlib.contextmanager
def stage(name: str):
    "Time the block as `name`, excluding nested stages (exclusive time)."
    t0 = time.perf_counter()
    _stack.append([name, 0.0])
    try: yield
    finally:
        _, inner = _stack.pop()
        total = time.perf_counter() - t0
        SECONDS[name] += total - inner
        COUNTS[name] += 1
        if _stack: _stack[-1][1] += total


def timed(fn, name):
    def wrapper(*args, **kwargs):
        with stage(name): return fn(*args, **kwargs)
    return wrapper


def who() -> str:
    "'teacher training' inside train_classifier, else 'distillation'."
    return 'teacher training' if any(n == '(teacher training)' for n, _ in _stack) else 'distillation'


def instrumented_epoch(model, loader, loss_fn, opt, step_fn, device, cfg) -> float:
    "kdnotes.train._train_epoch with a timer around each part of the step (the same calls, in the same order)."
    model.train()
    total, n = torch.zeros((), device=device), 0
    it = iter(loader)
    while True:
        with stage(f'{who()}: batches (shuffle, crop, normalise)'):
            batch = next(it, None)
        if batch is None: break
        xb, yb = batch
        with stage(f'{who()}: forward of the trained model(s)'): logits = model(xb)
        with stage(f'{who()}: loss'): loss = loss_fn(logits, xb, yb)
        with stage(f'{who()}: backward'):
            opt.zero_grad(set_to_none=True)
            loss.backward()
        with stage(f'{who()}: optimiser step'): step_fn()
        total += loss.detach() * len(xb)
        n += len(xb)
    return (total / n).item()


class TimedTeacher(torch.nn.Module):
    "A frozen teacher whose forward passes are timed as their own stage."
    def __init__(self, teacher):
        super().__init__()
        self.teacher = teacher
    def forward(self, x):
        with stage('distillation: teacher forward'): return self.teacher(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--threads', type=int, default=1, help='torch CPU threads (default 1)')
    ap.add_argument('--sizes', type=int, nargs='+', default=[100, 1000, 3800])
    ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    kdnotes.train._train_epoch = instrumented_epoch
    kdnotes.train.train_classifier = timed(kdnotes.train.train_classifier, '(teacher training)')
    side_by_side = kdnotes.distill.SideBySideLoss
    kdnotes.distill.SideBySideLoss = lambda teachers, cfg: side_by_side([TimedTeacher(t) for t in teachers], cfg)
    kdnotes.distill.predict = timed(kdnotes.distill.predict, 'evaluation (predict on test and distillation sets)')
    kdnotes.fidelity.control_fidelity = timed(kdnotes.fidelity.control_fidelity, 'evaluation (predict on test and distillation sets)')
    kdnotes.data.mnist5k = timed(kdnotes.data.mnist5k, 'load MNIST-5k')
    for mod in (kdnotes.fidelity,):  # modules that imported the names directly
        for name in ('mnist5k_splits',):
            if hasattr(mod, name): setattr(mod, name, timed(getattr(mod, name), 'split MNIST-5k'))
    cfgs = fidelity_configs(FidelityConfig(device='cpu'), args.seeds, size=args.sizes)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, stage('other (Python, run bookkeeping, JSON)'):
        fidelity_sweep(cfgs, tmp, desc='profile')
    wall = time.perf_counter() - t0
    steps = COUNTS['distillation: forward of the trained model(s)']
    teacher_steps = COUNTS['teacher training: forward of the trained model(s)']
    print(f'main job, {len(cfgs)} runs, {args.threads} thread(s), torch {torch.__version__}: {wall:.1f} s wall; '
          f'{steps} distillation steps (each trains a student and its control), {teacher_steps} teacher steps')
    print(f'| stage | seconds | share |')
    print(f'| --- | ---: | ---: |')
    for name, s in sorted(SECONDS.items(), key=lambda kv: -kv[1]):
        print(f'| {name} | {s:.1f} | {s / wall:.0%} |')


if __name__ == '__main__':
    main()
