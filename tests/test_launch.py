"""The launcher: parallel workers give the serial results; a killed worker's run is finished exactly once."""
import dataclasses, functools, json, os, signal, sys, time
from pathlib import Path

import cloudpickle
import pytest
import torch

from kdnotes.experiments import ResultStore
from kdnotes.launch import LaunchConfig, SweepIncomplete, claim_path, collect, launch_sweep, submit_workers
from kdnotes.fidelity import FidelityConfig, fidelity_run


def _without_timing(result: dict) -> dict:
    return {k: v for k, v in result.items() if 'seconds' not in k}


def test_local_workers_match_serial_fidelity(tmp_path):
    """A tiny fidelity sweep through submitit's local executor with two workers gives the serial records."""
    base = FidelityConfig(size=50, steps=10, teacher_epochs=2, teacher_per_class=5, test_per_class=10, device='cpu')
    cfgs = [dataclasses.replace(base, seed=s, size=n) for s in (0, 1) for n in (50, 100)]
    fn = functools.partial(fidelity_run, cache_dir=None)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers use one thread each: same arithmetic, same numbers
    try: serial = launch_sweep('fidelity', cfgs, fn, ResultStore(tmp_path / 'serial'), progress=False)
    finally: torch.set_num_threads(threads)
    par_store = ResultStore(tmp_path / 'parallel')
    parallel = launch_sweep('fidelity', cfgs, fn, par_store, LaunchConfig(launcher='local', workers=2, threads=1, time_min=5),
                            progress=False)
    assert [_without_timing(r) for r in parallel] == [_without_timing(r) for r in serial]
    assert len(par_store.records('fidelity')) == len(cfgs)
    assert not list((tmp_path / 'parallel' / '_runs').glob('*.claim'))  # every claim released


def _logged_run(cfg, log: str, slow_flag: str):
    """Toy run: logs its start and end; the first attempt at run 0 hangs while `slow_flag` exists."""
    first_attempt = cfg['x'] == 0 and 'start 0' not in (open(log).read() if os.path.exists(log) else '')
    with open(log, 'a') as f: f.write(f"start {cfg['x']}\n")
    while first_attempt and os.path.exists(slow_flag): time.sleep(0.1)  # the worker gets killed in here
    time.sleep(0.2)
    with open(log, 'a') as f: f.write(f"end {cfg['x']}\n")
    return dict(y=cfg['x'] ** 2)


def test_killed_worker_run_is_finished_once(tmp_path):
    """Kill a worker mid-run; the next invocation finishes the sweep and no run is done twice."""
    log, flag = tmp_path / 'log.txt', tmp_path / 'slow'
    flag.touch()
    fn = functools.partial(_logged_run, log=str(log), slow_flag=str(flag))
    cfgs = [dict(x=i) for i in range(5)]
    store = ResultStore(tmp_path / 'res')
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test file
    jobs = submit_workers(LaunchConfig(launcher='local', workers=2, threads=1, time_min=5), 'toy', cfgs, fn, store)
    claim = claim_path(store, 'toy', cfgs[0])
    for _ in range(1800):  # wait until a worker is inside run 0 (start-up is slow on a busy machine)
        if claim.exists() and log.exists() and 'start 0' in log.read_text(): break
        assert not all(j.done() for j in jobs), f'workers ended early: {[j.exception() for j in jobs]}'
        time.sleep(0.1)
    pid = json.loads(claim.read_text())['pid']
    os.kill(pid, signal.SIGKILL)  # a hard death: no clean-up, the claim file stays behind
    for j in jobs:
        while not j.done(): time.sleep(0.2)
    if not ResultStore(store.root).path('toy', cfgs[0]).exists():  # usual: no other worker retried run 0 yet
        with pytest.raises(SweepIncomplete, match='Run the same command again'): collect('toy', cfgs, store)
    flag.unlink()
    results = launch_sweep('toy', cfgs, fn, store, LaunchConfig(launcher='local', workers=2, threads=1, time_min=5),
                           progress=False)
    assert results == [dict(y=i * i) for i in range(5)]
    lines = log.read_text().splitlines()
    assert sorted(l for l in lines if l.startswith('end')) == [f'end {i}' for i in range(5)]  # each finished once
    assert lines.count('start 0') == 2  # started by the killed worker, then once more
