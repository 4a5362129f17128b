"""A share of the mesh's triangles reads the same wherever the page says it: the Export-again line and the Simplify
help name the default's 2.5 %, not one of them 3 %."""
import pytest

from desktop.settings import SETTINGS, GenerationSettings
from desktop.ui.export_panel import plan_text


def test_export_again_and_the_simplify_help_name_the_same_share():
    s = GenerationSettings(formats=("glb",), target_faces=None)
    assert s.simplify == SETTINGS["simplify"].default == 0.975
    line = plan_text(s, s, preview_kept=False)
    assert "2.5 % of the triangles" in line, line
    assert "0.975 keeps 2.5 % of the triangles" in SETTINGS["simplify"].ui.info
    assert "(0.975: 2.5 %," in SETTINGS["simplify"].help


@pytest.mark.parametrize("kept, words", [(0.025, "2.5 %"), (1 - 0.975, "2.5 %"), (1 - 0.995, "0.5 %"),
                                         (0.5, "50 %"), (1.0, "100 %"), (0.0625, "6.25 %")])
def test_one_formatter_for_a_share_of_triangles(kept, words):
    from desktop.settings_table import triangle_share

    assert triangle_share(kept) == words
