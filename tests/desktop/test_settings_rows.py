"""One row per setting (desktop/settings_table.py): a setting added as a row alone reaches every surface.

The main test runs a fresh Python that appends four rows to settings_table.ROWS before anything else of the
app is imported (as an edit of that file would), then finds each new setting in the real surfaces: the
page (its control, Generate, "Use these settings"), the flags of generate, retexture and batch, the REST
API (its schema and a POST /v1/jobs), StableProjectorz (its panel and a POST /generate), settings.json,
the CPU values and the docs table. The rows cover the kinds the export settings need: an optional int,
a choice, a bool with --x / --no-x and a float with a preset value, a CPU value and a panel dial.

This module imports no desktop module at its top but settings_table: the child process must patch the
rows before desktop.settings is first imported.
"""
import dataclasses
import json
import re
from pathlib import Path

import pytest

from desktop.settings_table import ROWS, Cli, Cpu, Panel, Setting, Ui
from tests.helpers.children import run_child
from tests.helpers.recorder import Recorder

DUMMIES = (
    Setting("dummy_faces", "int", None, "most faces of the file (none: no limit)", lo=100, hi=1_000_000,
            optional=True, export=True, ui=Ui("output", "Dummy faces"), cli=Cli("--dummy-faces")),
    Setting("dummy_pivot", "choice", "center", "where the origin goes", choices=("bottom", "center"), export=True,
            ui=Ui("output", "Dummy pivot"), cli=Cli("--dummy-pivot")),
    Setting("dummy_normal_map", "bool", False, "bake a normal map too", export=True,
            ui=Ui("output", "Dummy normal map"), cli=Cli("--dummy-normal-map"),
            panel=Panel("dummy_normal_map", "normal map")),
    Setting("dummy_height", "float", 1.0, "height of the object in metres", lo=0.01, hi=100.0, step=0.01,
            presets={"high": 2.0}, cpu=Cpu(0.5, "a dummy's reason", ("glb",)), export=True,
            ui=Ui("output", "Dummy height"), cli=Cli("--dummy-height"), panel=Panel("dummy_h", "height", 2)),
)
# A job's settings with every dummy off its default (as a settings.json from any surface would hold them).
CHANGED = {"dummy_faces": 5000, "dummy_pivot": "bottom", "dummy_normal_map": True, "dummy_height": 3.5}
FLAGS = ["--dummy-faces", "5000", "--dummy-pivot", "bottom", "--dummy-normal-map", "--dummy-height", "3.5"]


def child(out: str) -> None:
    """Runs in the fresh process: the dummies appended to the table, then every surface checked."""
    import desktop.settings_table as table

    table.ROWS = (*table.ROWS, *DUMMIES)
    from desktop.settings import EXPORT_FIELDS, GenerationSettings

    s = GenerationSettings(preset="custom", seed=3, randomize_seed=False, **CHANGED)
    check_settings_file(s, Path(out))
    check_cli(Path(out))
    check_page(s, Path(out))
    check_rest(Path(out))
    check_stable_projectorz(Path(out))
    assert set(CHANGED) <= set(EXPORT_FIELDS)
    from desktop.settings_docs import markdown

    assert all(f"| `{name}` |" in markdown() for name in CHANGED)
    print("every surface has the dummies")


def check_settings_file(s, out: Path) -> None:
    from desktop.jobs.folder import JobFolder
    from desktop.settings import GenerationSettings

    assert GenerationSettings().dummy_faces is None and GenerationSettings().dummy_pivot == "center"
    assert {k: s.to_dict()[k] for k in CHANGED} == CHANGED
    folder = JobFolder(out / "20260101-100000-aaaaaaaa")
    folder.path.mkdir(parents=True)
    folder.write_settings({"settings": s.to_dict()})
    assert GenerationSettings.from_json(folder.settings_record()) == s
    with pytest.raises(ValueError, match="dummy_faces: 5 is out of range"):
        s.replace(dummy_faces=5)
    with pytest.raises(ValueError, match="dummy_pivot: 'top' is not one of bottom, center"):
        s.replace(dummy_pivot="top")
    high = GenerationSettings.from_preset("high")
    assert high.dummy_height == 2.0 and high.for_device("cpu").dummy_height == 0.5
    assert high.replace(dummy_height=2.0).for_device("cpu").dummy_height == 2.0       # set by the user: kept


def check_cli(out: Path) -> None:
    from desktop import cli, retexture
    from desktop.batch import command

    for parser, head in [(cli.build_parser(), ["x.png"]), (retexture.build_parser(), ["m.glb", "--prompt", "p"]),
                         (command.build_parser(), ["photos"])]:
        text = " ".join(parser.format_help().split())
        for flag in ("--dummy-faces", "--dummy-pivot", "--dummy-normal-map", "--no-dummy-normal-map", "--dummy-height"):
            assert flag in text, (parser.prog, flag)
        assert "(100..1000000 or none)" in text and "(0.01..100)" in text, parser.prog
        s = cli.settings_from_args(parser.parse_args([*head, "-o", str(out), *FLAGS]))
        assert {k: getattr(s, k) for k in CHANGED} == CHANGED, parser.prog
        s = cli.settings_from_args(parser.parse_args([*head, "-o", str(out), "--preset", "high", "--dummy-faces", "none",
                                                      "--no-dummy-normal-map", "--set", "dummy_pivot=bottom"]))
        assert (s.dummy_faces, s.dummy_normal_map, s.dummy_pivot, s.dummy_height) == (None, False, "bottom", 2.0)
        assert {"dummy_faces", "dummy_normal_map", "dummy_pivot"} <= s.explicit
        with pytest.raises(SystemExit):
            parser.parse_args([*head, "-o", str(out), "--dummy-pivot", "top"])


def check_page(s, out: Path) -> None:
    """The controls, "Use these settings" of a settings.json holding the dummies, then Generate with what it
    loaded: the job gets the file's values (every setting the page shows, not only the dummies)."""
    from desktop import ui

    runner = Recorder(out)
    app = ui.TrellisApp(runner)
    try:
        demo = app.build()
        controls = {c.elem_id: c for c in demo.blocks.values() if getattr(c, "elem_id", None)}
        kinds = {"dummy_faces": "Number", "dummy_pivot": "Radio", "dummy_normal_map": "Checkbox",
                 "dummy_height": "Slider"}
        for name, kind in kinds.items():
            assert type(controls[f"td-{name}"]).__name__ == kind, name
        assert (controls["td-dummy_height"].minimum, controls["td-dummy_height"].maximum) == (0.01, 100.0)
        reuse = next(f for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "reuse_settings")
        answer = app.reuse_settings("20260101-100000-aaaaaaaa")
        # A skipped output (gr.skip(): e.g. the preset of "custom" settings) keeps what the control shows.
        page = {c: getattr(c, "value", None) if isinstance(v, dict) and v.get("__type__") == "update" else v
                for c, v in zip(reuse.outputs, answer)}
        for name in CHANGED:
            assert page[controls[f"td-{name}"]] == CHANGED[name], name
        generate = next(f for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "on_generate")
        data = {c: page.get(c) for c in generate.inputs}
        data[controls["td-single"]] = "x.png"
        steps = list(app.generate(data, None))
        assert "recorded" in str(steps[0][0]), steps
        (sent,) = runner.submitted
        shown = [row.name for row in ROWS + DUMMIES if row.ui]
        assert {n: getattr(sent, n) for n in shown} == {n: getattr(s, n) for n in shown}
    finally:
        app.close()


def check_rest(out: Path) -> None:
    from starlette.testclient import TestClient

    from desktop.api import create_app
    from desktop.api.common import parameter_fields

    assert set(CHANGED) <= set(parameter_fields())
    runner = Recorder(out)
    client = TestClient(create_app(runner, allowed_hosts=["testserver"]))
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    for model in ("JobRequest", "Settings", "ExportRequest", "SpzImageForm"):
        assert set(CHANGED) <= set(schemas[model]["properties"]), model
    assert {"dummy_normal_map", "dummy_h"} <= set(schemas["SpzGenerateRequest"]["properties"])
    answer = client.post("/v1/jobs", json={"prompt": "a chair", **CHANGED})
    assert answer.status_code == 503 and "recorded" in answer.text, answer.text
    answer = client.post("/v1/jobs", json={"prompt": "a chair", "dummy_faces": None})
    assert {k: getattr(runner.submitted[0], k) for k in CHANGED} == CHANGED
    assert runner.submitted[1].dummy_faces is None
    answer = client.post("/v1/jobs", json={"prompt": "a chair", "dummy_pivot": "top"})
    assert answer.status_code == 422 and "dummy_pivot" in answer.text, answer.text


def check_stable_projectorz(out: Path) -> None:
    from starlette.testclient import TestClient

    from desktop.api import create_app
    from desktop.api.spz import panel_layout
    from desktop.settings import GenerationSettings

    lines = panel_layout(GenerationSettings.from_preset("high")).splitlines()
    inputs = {props["code_name"]: (line.split()[0], props) for line in lines
              for props in [dict(re.findall(r"(\S+?)=\(([^()]*)\)", line))] if "code_name" in props}
    kind, props = inputs["dummy_h"]
    assert kind == "slider" and (props["min"], props["max"], props["default"]) == ("0.01", "100", "2"), props
    kind, props = inputs["dummy_normal_map"]
    assert kind == "toggle" and props["default"] == "false", props
    runner = Recorder(out)
    client = TestClient(create_app(runner, allowed_hosts=["testserver"]))
    body = {"prompt": "a chair", "generate_what": "make_meshes_and_tex", "dummy_h": 3.5, "dummy_normal_map": True}
    answer = client.post("/generate", json=body)
    assert answer.status_code == 503 and "recorded" in answer.text, answer.text
    (sent,) = runner.submitted
    assert (sent.dummy_height, sent.dummy_normal_map) == (3.5, True)


def test_a_new_row_reaches_every_surface(tmp_path):
    proc = run_child(__file__, str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "every surface has the dummies" in proc.stdout


# ------------------------------------------------------------------------------------------ in process

def test_the_table_refuses_rows_whose_facts_do_not_fit():
    from desktop.settings import check_rows

    bad_rows = [
        (Setting("x", "int", 0, "h", lo=1, hi=5), "x: 0 is out of range"),
        (Setting("x", "int", 1, "h", lo=1, hi=5, presets={"ultra": 2}), "presets among"),
        (Setting("x", "choice", "a", "h", choices=("a", "b"), panel=Panel("x", "x")), "panel input only"),
        (Setting("x", "int", None, "h", lo=1, hi=5, optional=True, cpu=Cpu(1, "w", ())), "CPU value only"),
        (Setting("x", "bool", True, "h", ui=Ui("sidebar", "X")), "ui place"),
        (Setting("x", "bool", False, "h", cli=Cli("--no-x")), "--no-... flag only for a true default"),
        (Setting("x", "choice", "a", "h", choices=("a", "b"), ui=Ui("output", "X", labels=(("A", "a"),))),
         "a ui label per choice"),
        (Setting("x", "choices", ("b", "a"), "h", choices=("a", "b")), "choices' order"),
        (Setting("seed", "bool", True, "h"), "a new identifier"),
    ]
    for row, words in bad_rows:
        with pytest.raises(ValueError, match=re.escape(words)):
            check_rows([*ROWS, row])
    with pytest.raises(ValueError, match="kind of the rows sharing its flag"):
        check_rows([*ROWS, Setting("x", "float", 1.0, "h", lo=0.0, hi=2.0, cli=Cli("--steps"))])
    with pytest.raises(ValueError, match="'preset' of kind preset"):
        check_rows(ROWS[1:])
    assert list(check_rows([*ROWS, *DUMMIES])) == [row.name for row in ROWS + DUMMIES]


def test_the_old_per_fact_tables_come_from_the_rows():
    from desktop import settings

    fields = [f.name for f in dataclasses.fields(settings.GenerationSettings) if f.name != "explicit"]
    assert fields == [row.name for row in ROWS] == list(settings.HELP)
    assert settings.PRESETS["high"] == {r.name: r.presets["high"] for r in ROWS if "high" in r.presets}
    assert settings.CPU_VALUES == {r.name: r.cpu.value for r in ROWS if r.cpu}
    assert settings.EXPORT_FIELDS == tuple(r.name for r in ROWS if r.export)
    assert settings.STEPS == {r.name: r.step for r in ROWS if r.step is not None}
    assert json.loads(settings.GenerationSettings().to_json()) == {r.name: (list(r.default) if isinstance(
        r.default, tuple) else r.default) for r in ROWS}


def test_the_docs_table_is_the_rows():
    from desktop.settings_docs import DOC_PATH, markdown

    assert DOC_PATH.read_text(encoding="utf-8") == markdown(), "run: python -m desktop.settings_docs"


def test_page_lines_pair_sliders_and_put_wide_controls_first():
    from desktop.ui.output_layout import OUTPUT_SECTIONS
    from desktop.ui.values import page_lines

    assert [[r.name for r in line] for line in page_lines("generation")] == [
        ["seed", "randomize_seed"], ["ss_steps", "ss_cfg"], ["slat_steps", "slat_cfg"], ["pipeline_type"]]
    # the Output settings box is laid out by its sections instead: each output setting once, none unknown
    named = [name for _, lines in OUTPUT_SECTIONS for line in lines for name in line]
    assert sorted(named) == sorted(r.name for line in page_lines("output") for r in line)


def test_one_flag_block_for_every_command():
    from desktop import cli, retexture
    from desktop.batch import command

    def block(parser):
        return parser.format_help().split("\nsettings:\n")[1].split("\n\n")[0]
    assert block(cli.build_parser()) == block(retexture.build_parser()) == block(command.build_parser())
    flags = re.findall(r"^  (--[a-z-]+)", block(cli.build_parser()), re.M)
    assert flags == ["--preset", "--settings", "--seed", "--steps", "--pipeline-type", "--simplify", "--texture-size", "--destination",
                     "--formats", "--target-faces", "--topology", "--normal-map", "--height", "--pivot", "--up", "--units",
                     "--geometry-only", "--texture-format", "--draco", "--lods", "--print-ready",
                     "--no-background-removal", "--attention", "--vram-budget", "--keep-mesh", "--text-size", "--set"]
