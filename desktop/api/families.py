"""The API's side of the model families (desktop/families declares them): a client's `model_family` refused as a
422 naming its field (REST v1, StableProjectorz), and the names the page's modules still read from here (ids and
words, the runner's families as ids), each a view of the registry."""
from __future__ import annotations

from ..families import FAMILIES as REGISTRY
from ..families import FAMILY_HELP, family_problem  # noqa: F401 (the schemas' help, the page's check)
from ..families import loaded_family as loaded
from ..families import runner_families  # noqa: F401
from ..families import runner_family as running

FAMILY_NAMES = {name: f.words for name, f in REGISTRY.items()}       # id -> words
FAMILIES = tuple(REGISTRY)                                            # the ids, v1 first (the schemas' Literal)


def runner_family(runner) -> str:
    """The id of the runner's own family (what a job naming none runs)."""
    return running(runner).name


def loaded_family(runner) -> str:
    """The id of the family loaded now (a job of the other one switches it), else the runner's own."""
    return loaded(runner).name


def install_line(found) -> str:
    """How to install TRELLIS.2 for an unavailable `found` (Trellis2Availability)."""
    from ..families.trellis2 import install_line as line

    return line(found)


def trellis2_here():
    """trellis2_availability of the app's models folder: whether TRELLIS.2 could run, and why not."""
    from ..families.trellis2 import availability

    return availability()


def family_info(runner, installed=None) -> list:
    """GET /v1/health's `family_info`: each family's id, words, pipeline types and unused settings, and whether a job
    may name it here (`installed`: the ids runner_families gives, when known already)."""
    here = set(runner_families(runner) if installed is None else installed)
    return [{"id": f.name, "words": f.words, "about": f.about, "pipeline_types": list(f.pipeline_types),
             "default_pipeline_type": f.default_pipeline_type, "unused_settings": list(f.ignores),
             "installed": f.name in here} for f in REGISTRY.values()]


def check_family(runner, wanted, where=("body", "model_family")) -> None:
    """The API's 422 (ApiError naming the field `where`) when `family_problem` finds one."""
    from .common import ApiError

    wrong = family_problem(runner, wanted)
    if wrong:
        raise ApiError(422, [{"loc": list(where), "msg": wrong, "type": "value_error"}])
