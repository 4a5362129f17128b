"""The API's side of the model families (desktop/families declares them): a client's `model_family` refused as a
422 naming its field (REST v1, StableProjectorz), the ids as the schemas' choice, and GET /v1/health's
`family_info`."""
from __future__ import annotations

from ..families import FAMILIES as REGISTRY
from ..families import FAMILY_HELP, family_problem, runner_families  # noqa: F401 (the schemas' help, v1, the page)

FAMILIES = tuple(REGISTRY)                                            # the ids, v1 first (the schemas' Literal)


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
