"""A batch list's settings cells are read by the settings' own reader (desktop.settings.parse_value), so that a
setting added as a row of settings_table.ROWS is a column too, "none" of an optional number included.

The first test runs a fresh Python that appends an optional int row to the table before anything else of the
app is imported (as an edit of settings_table.py would), then reads a CSV through the real item reader. This
module imports nothing of the app at its top: the child process must patch the rows first.
"""
from pathlib import Path

from tests.helpers.children import run_child

CSV = ("image,dummy_limit,seed\n"
       "good.png,none,3\n"
       "good.png,500,\n"
       "good.png,NULL,\n"
       "good.png,5,\n"
       "good.png,lots,\n")


def child(out: str) -> None:
    """Runs in the fresh process: the optional row appended, then the CSV read by desktop.batch.items."""
    import desktop.settings_table as table

    table.ROWS = (*table.ROWS, table.Setting("dummy_limit", "int", None, "a dummy limit (none: no limit)", lo=10,
                                             hi=1000, optional=True))
    from tests.helpers.images import rgba_blob

    from desktop.batch.items import read_items
    from desktop.settings import GenerationSettings

    folder = Path(out)
    rgba_blob(folder / "good.png")
    (folder / "list.csv").write_text(CSV, encoding="utf-8")
    items = read_items(str(folder / "list.csv"))
    assert [(i.changes, i.problem) for i in items] == [
        ({"dummy_limit": None, "seed": 3}, None),
        ({"dummy_limit": 500}, None),
        ({"dummy_limit": None}, None),
        ({"dummy_limit": 5}, "bad item: dummy_limit: 5 is out of range; use 10..1000"),
        ({}, "bad item: dummy_limit: expected a whole number or none, got 'lots'")], [(i.changes, i.problem)
                                                                                     for i in items]
    # "none" is a value: it replaces the batch's own limit, where an empty cell keeps it.
    base = GenerationSettings(dummy_limit=700)
    assert [i.settings(base).dummy_limit for i in items[:3]] == [None, 500, None]
    print("the optional column was read")


def test_an_optional_int_column_takes_none_and_a_number(tmp_path):
    proc = run_child(__file__, str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "the optional column was read" in proc.stdout


def test_every_kind_of_settings_cell_is_read_as_the_cli_reads_it(tmp_path):
    from tests.helpers.images import rgba_blob

    from desktop.batch.items import read_items

    rgba_blob(tmp_path / "good.png")
    (tmp_path / "list.csv").write_text('image;fill_holes;simplify;bake_mode;formats;ss_steps\n'
                                       'good.png;no;0.5;opt;glb,ply;4\n'
                                       'good.png;maybe;;;;\n'
                                       'good.png;;half;;;\n', encoding="utf-8")
    good, bad_bool, bad_float = read_items(str(tmp_path / "list.csv"))
    assert good.problem is None and good.changes == {"fill_holes": False, "simplify": 0.5, "bake_mode": "opt",
                                                     "formats": "glb,ply", "ss_steps": 4}
    from desktop.settings import GenerationSettings

    assert good.settings(GenerationSettings()).formats == ("glb", "ply")
    assert bad_bool.problem == "bad item: fill_holes: expected true or false, got 'maybe'"
    assert bad_float.problem == "bad item: simplify: expected a number, got 'half'"
