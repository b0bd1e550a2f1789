"""The export's re-wrapping (tools/export.py): generated parts within 110 columns, their values unchanged."""
import ast, importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location('export_tool', ROOT / 'tools' / 'export.py')
export = importlib.util.module_from_spec(spec)
spec.loader.exec_module(export)


def test_columns_count_wide_characters_twice():
    assert export.columns('abc') == 3 and export.columns('a‖b') == 4 and export.columns('漢') == 2


def test_every_line_of_the_package_within_110_columns():
    long = [f'{p.relative_to(ROOT)}:{i} ({export.columns(l)})' for p in sorted((ROOT / 'kdnotes').rglob('*.py'))
            for i, l in enumerate(p.read_text(encoding='utf-8').split('\n'), 1) if export.columns(l) > 110]
    assert not long, f'lines over 110 columns (run `make export`; shorten them in the notebooks): {long}'


def test_wrap_all_keeps_the_names_and_wraps_as_nbdev_does():
    names = [f'name_{i:03d}' for i in range(40)]
    nbdev_style = "# %% auto #0\n__all__ = " + repr(names) + "\n\n# %% cell\nx = 1\n"
    wrapped = export.wrap_all(nbdev_style)
    assert max(map(len, wrapped.split('\n'))) <= 110 < len(repr(names))
    tree = ast.parse(wrapped)
    assert ast.literal_eval(tree.body[0].value) == names and wrapped.endswith('\n# %% cell\nx = 1\n')
    assert export.wrap_all(wrapped) == wrapped  # a second export changes nothing
    assert export.wrap_all('x = 1\n') == 'x = 1\n'  # a module without __all__ is left alone


def test_format_modidx_keeps_the_index():
    long_key = 'kdnotes.zoo_outputs.' + 'a_very_long_symbol_name_' * 3
    d = {'settings': {'branch': 'main', 'lib_path': 'kdnotes'},
         'syms': {'kdnotes.x': {'kdnotes.x.f': ('x.html#f', 'kdnotes/x.py'),
                                long_key: ('zoo_outputs.html#' + 'anchor' * 8, 'kdnotes/zoo_outputs.py')}}}
    text = export.format_modidx(d)
    ns = {}
    exec(text, ns)
    assert ns['d'] == d and max(map(len, text.split('\n'))) <= 110
    assert export.read_modidx(ROOT / 'kdnotes' / '_modidx.py')['syms']  # the committed index reads back
