"""The lent-GPU tools that run here: the fit check (tools/gpu_size.py), the PNG shrinker
(tools/shrink_pngs.py), the diffusers wheel (tools/pack_diffusers.py), the fail-early rules of
tools/gpu_task.py."""
import base64, importlib.util, io, json, sys, zipfile
from pathlib import Path
import pytest
from PIL import Image

TOOLS = Path(__file__).resolve().parents[1] / 'tools'


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, TOOLS / f'{name}.py')
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _png(w, h) -> bytes:
    im = Image.new('RGBA', (w, h), 'white')
    for x in range(0, w, 7): im.putpixel((x, h // 2), (200, 30, 30, 255))
    buf = io.BytesIO(); im.save(buf, format='PNG')
    return buf.getvalue()


def test_shrink_pngs_reencodes_2x_figures_to_their_displayed_size(tmp_path):
    sp = _tool('shrink_pngs')
    out = lambda png, w, h: dict(output_type='display_data',
                                 data={'image/png': base64.b64encode(png).decode() + '\n'},
                                 metadata={'image/png': dict(width=w, height=h)})
    nb = dict(nbformat=4, nbformat_minor=5, metadata={}, cells=[dict(
        cell_type='code', id='a1', metadata={}, source='plot()', execution_count=None,
        outputs=[out(_png(400, 200), 200, 100), out(_png(200, 100), 200, 100)])])  # 2x, and already 1x
    p = tmp_path / 'x.ipynb'
    p.write_text(json.dumps(nb, indent=1) + '\n')
    n, before, after = sp.shrink_notebook(p, write=False)
    assert n == 1 and after < before
    assert p.read_text() == json.dumps(nb, indent=1) + '\n'  # a dry run writes nothing
    assert sp.shrink_notebook(p)[0] == 1
    outs = json.loads(p.read_text())['cells'][0]['outputs']
    sizes = [Image.open(io.BytesIO(base64.b64decode(o['data']['image/png']))).size for o in outs]
    assert sizes == [(200, 100), (200, 100)]
    assert outs[0]['metadata'] == {'image/png': dict(width=200, height=100)}  # displayed as before
    assert sp.shrink_notebook(p)[0] == 0  # idempotent
    with pytest.raises(SystemExit): sp.main(['--colors', '300', str(p)])


def test_gpu_size_counts_carried_paths_and_wants_room_to_spare(tmp_path, capsys):
    gs = _tool('gpu_size')
    assert gs.main(['--carry', 'no-such-folder']) == 2 and 'make gpu-prepare' in capsys.readouterr().out
    assert gs.folder_bytes(tmp_path / 'none') == 0
    (tmp_path / 'a.bin').write_bytes(b'x' * 1000)
    assert gs.folder_bytes(tmp_path) == 1000
    m = gs.measure([])
    assert m['total'] == m['tracked'] + m['untracked'] > 0
    assert gs.main(['--carry', '--spare', '1000']) == 2  # 1 GB to spare can never be had
    assert 'less than 1000 MB to spare' in capsys.readouterr().out


def test_pack_diffusers_builds_the_full_wheel_checked_against_record(tmp_path):
    pytest.importorskip('diffusers')
    pd = _tool('pack_diffusers')
    full, trim = pd.build(tmp_path / 'full'), pd.build(tmp_path / 'trim', trim=True)
    names = zipfile.ZipFile(full).namelist()
    assert any(n.startswith('diffusers/pipelines/') for n in names)  # nothing dropped
    assert not any(n.startswith('diffusers/pipelines/') for n in zipfile.ZipFile(trim).namelist())
    assert 'diffusers/models/unets/unet_2d.py' in names and not any('__pycache__' in n for n in names)
    assert pd.build(tmp_path / 'full').read_bytes() == full.read_bytes()  # the same bytes each time


def _gpu_task():
    return _tool('gpu_task')


def test_gpu_task_compile_probe_failure_skips_only_u1(tmp_path):
    gt = _gpu_task()
    assert gt.PROBES[0][0] == 'diffusers' and 'compile' not in dict(gt.PROBES)  # cheapest, likeliest first
    ok = lambda scale, data, dev: dict(ok=True)
    gt.PROBES = (('diffusers', ok), ('bf16_channels_last', ok))
    gt.COMPILE_PROBE = ('compile', lambda scale, data, dev: 1 / 0)
    log = gt.Log(tmp_path)
    pr = gt.probe(gt.DRY, {}, log, tmp_path, compile_check=True)
    assert pr['diffusers']['ok'] and not pr['compile']['ok'] and 'ZeroDivisionError' in pr['compile']['error']
    assert 'compile' not in gt.probe(gt.DRY, {}, log, tmp_path, compile_check=False)
    gt.PROBES = (('diffusers', lambda scale, data, dev: dict(ok=False)), ('bf16_channels_last', ok))
    assert list(gt.probe(gt.DRY, {}, log, tmp_path)) == ['diffusers']  # stops at the first failure
    (tmp_path / 'U1-a.json').write_text(json.dumps(dict(unit='U1', complete=False)))
    assert gt.next_unit(tmp_path) == 'U1' and gt.next_unit(tmp_path, skip=('U1',)) == 'U2'


def test_gpu_task_budget_counts_from_the_shell_script_and_has_a_floor(tmp_path, monkeypatch, capsys):
    import time
    gt = _gpu_task()
    monkeypatch.setenv('KDNOTES_TASK_T0', str(time.time() - 30))
    assert 29 < 100 - gt.Log(tmp_path).left(100) < 40  # 30 s spent before Python started
    with pytest.raises(SystemExit):
        gt.main(['--budget', '100', '--out', str(tmp_path)])
    assert 'give at least' in capsys.readouterr().err
