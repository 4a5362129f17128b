"""The topology setting: one row, reaching the CLI's generate and export commands and both families' export
options."""
import pytest

from desktop import cli
from desktop.jobs.mesh_files import export_options
from desktop.jobs.trellis2_steps import pbr_options
from desktop.settings import GenerationSettings


@pytest.mark.parametrize("command", ["generate", "export"])
def test_the_cli_takes_topology_quads(command, tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(b"")
    argv = [command, str(image), "--topology", "quads"] if command == "generate" else [command, str(tmp_path),
                                                                                      "--topology", "quads"]
    args = cli.build_parser().parse_args(argv)
    assert cli.settings_from_args(args).topology == "quads"
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(argv[:-1] + ["hexes"])


def test_default_is_triangles_and_both_families_get_the_choice():
    assert GenerationSettings().topology == "triangles"
    quads = GenerationSettings(topology="quads")
    assert export_options(quads).topology == "quads"
    assert pbr_options(quads).topology == "quads"
    assert GenerationSettings.from_json(quads.to_json()).topology == "quads"
    with pytest.raises(ValueError, match="topology"):
        GenerationSettings(topology="hexes")
