"""JobRequest: the kind of job follows from what a request holds (or what a surface states), and what is missing or
wrong is said once, in the words of the surface that asks (its FieldNames), before anything is queued."""
import pytest

from desktop.jobs import FieldNames, JobRequest, RequestError
from desktop.settings import GenerationSettings

V1 = FieldNames(images="`images`", prompt="a `prompt`", mesh="`mesh`", family="`model_family`")
CLI = FieldNames(images="one or more images", prompt="--prompt TEXT", mesh=None, family="--model-family")
PANEL = FieldNames(images="single_multi_img_input", prompt=None, mesh=None)


def problem(request, names=FieldNames()):
    with pytest.raises(RequestError) as caught:
        request.checked(names)
    return caught.value.field, str(caught.value)


@pytest.mark.parametrize("fields, kind", [
    (dict(images=["a.png"]), "generate"),
    (dict(images="a.png"), "generate"),
    (dict(images=["a.png", "b.png"]), "generate"),
    (dict(prompt="a chair"), "text"),
    (dict(mesh="chair.glb", prompt="gold"), "variant"),
    (dict(mesh=("chair.glb", b"glTF"), images=["look.png"]), "variant"),
    (dict(), None),
    (dict(images=["a.png"], kind="text"), "text"),
])
def test_the_kind_follows_from_what_the_request_holds_unless_stated(fields, kind):
    assert JobRequest(**fields).kind == kind


def test_a_checked_request_keeps_its_inputs_and_strips_its_prompt():
    settings = GenerationSettings(seed=4)
    request = JobRequest(prompt="  a red chair \n", settings=settings, keep_result=1, family="")
    checked = request.checked()
    assert (checked.prompt, checked.kind, checked.settings, checked.keep_result, checked.family) == \
        ("a red chair", "text", settings, True, None)
    assert request.prompt == "  a red chair \n"                  # frozen: checking makes a new one
    look = JobRequest(mesh="chair.glb", images="look.png", family="trellis2").checked()
    assert (look.image, look.images, look.family) == ("look.png", ("look.png",), "trellis2")
    assert JobRequest(mesh="chair.glb", prompt="gold").checked().image is None
    assert JobRequest(images=["a.png", "b.png"]).checked().image is None      # only a new look has "the" image


def test_what_is_missing_or_wrong_names_the_surfaces_own_fields():
    assert problem(JobRequest(), V1) == (None, (
        "nothing to make (no image, no prompt): give a `prompt` for an asset from text, `images` for one from "
        "photos, or `mesh` with a prompt or one image for a new look"))
    assert problem(JobRequest(), CLI) == (None, (
        "nothing to make (no image, no prompt): give --prompt TEXT for an asset from text, or one or more images "
        "for one from photos"))
    assert problem(JobRequest(), PANEL) == (None, "no image: give single_multi_img_input")   # its clients: no prompt
    field, words = problem(JobRequest(images=["a.png"], prompt="a chair"), V1)
    assert field is None and words.startswith("give a `prompt` or `images`, not both") and "goes with `mesh`" in words
    field, words = problem(JobRequest(images=["a.png"], prompt="a chair"), CLI)
    assert words.startswith("give --prompt TEXT or one or more images, not both") and "mesh" not in words
    assert problem(JobRequest(mesh="m.glb"), V1) == (None, "a new look for `mesh` needs a `prompt` or exactly one image")
    assert problem(JobRequest(mesh="m.glb", images=["a.png", "b.png"]), V1) == \
        ("images", "a new look for `mesh` needs a `prompt` or exactly one image (2 given)")
    assert problem(JobRequest(mesh="m.glb", images=["a.png"], prompt="gold"), V1) == \
        (None, "a new look takes a `prompt` or an image, not both (clear the one not wanted)")


def test_a_prompt_is_checked_as_every_surface_checks_it():
    for prompt in ("", "   ", "\u200b"):
        assert problem(JobRequest(prompt=prompt)) == \
            ("prompt", "the prompt is empty: describe the object to make (e.g. 'a red wooden chair')")
    field, words = problem(JobRequest(prompt="x" * 20_001))
    assert field == "prompt" and "20,001 characters" in words
    field, words = problem(JobRequest(mesh="m.glb", prompt=" "))
    assert field == "prompt" and words.startswith("the prompt is empty")
    assert problem(JobRequest(prompt=5)) == ("prompt", "the prompt must be text, got int")


def test_a_stated_kind_says_what_that_kind_misses():
    assert problem(JobRequest(kind="generate"), CLI) == ("images", "no image: give one or more images")
    assert problem(JobRequest(kind="text"))[0] == "prompt"
    assert problem(JobRequest(kind="variant", prompt="gold"), V1) == ("mesh", "a new look needs `mesh` to give it to")
    assert problem(JobRequest(kind="text", prompt="a chair", mesh="m.glb"), V1) == \
        ("mesh", "`mesh` goes with a new look, not with an asset from text")
    with pytest.raises(ValueError, match="unknown job kind 'export'"):
        JobRequest(kind="export")


def test_a_prompt_is_refused_an_image_only_family_and_a_malformed_upload():
    field, words = problem(JobRequest(prompt="a chair", family="trellis2"), V1)
    assert field == "family" and words.endswith("a prompt is made by the TRELLIS-text model: leave out "
                                                "`model_family`, or give an image")
    assert JobRequest(prompt="a chair", family="trellis").checked().family == "trellis"    # v1's text model
    field, words = problem(JobRequest(prompt="a chair", family="trellis3"))
    assert field == "family" and "trellis3" in words
    assert problem(JobRequest(mesh=("m.glb", "not bytes"), prompt="gold")) == \
        ("mesh", "a new look needs a 3-D model: a file path, or (file name, bytes)")
    with pytest.raises(TypeError, match="GenerationSettings"):
        JobRequest(images=["a.png"], settings={"seed": 1})


def test_the_runner_refuses_a_request_before_anything_is_written(tiny_pipeline_dir, tmp_path):
    from desktop.jobs import JobRunner

    out = tmp_path / "out"
    with JobRunner(tiny_pipeline_dir, out, device="cpu", recover=False) as runner:
        for request in (JobRequest(), JobRequest(images=["a.png"], prompt="a chair"), JobRequest(prompt=" "),
                        JobRequest(mesh="m.glb"), JobRequest(prompt="a chair", family="trellis2")):
            with pytest.raises(RequestError):
                runner.submit_request(request)
        with pytest.raises(RequestError, match="no image: give images"):
            runner.submit([])
        assert runner.list() == []
    assert not [p for p in out.rglob("*") if p.is_file()]


def test_a_prompt_is_labelled_by_its_first_40_characters_in_quotes_on_every_surface():
    from desktop import cli
    from desktop.jobs.folder import describe_record
    from desktop.jobs.request import prompt_label

    short, long = "a red chair", "a tall wooden chair with a carved back and four legs"
    assert prompt_label(short) == '"a red chair"'
    assert prompt_label("x" * 40) == '"' + "x" * 40 + '"'
    assert prompt_label(long) == f'"{long[:40]}…"'
    assert cli.job_name(JobRequest(prompt=long)) == prompt_label(long)           # the command's progress lines
    assert describe_record({"prompt": long}) == prompt_label(long)               # the history's list


def test_job_for_applies_one_family_rule_for_the_runner_and_the_batch():
    """request.job_for: the request -> Job step of JobRunner.submit_request and the batch's items. `folder_for` says
    which families are installed (here only TRELLIS v1); the runner lets an image job for a family not installed fail
    when it starts, the batch (refuse_not_installed) refuses it at once in the family's words."""
    from desktop.families import FAMILIES, FamilyRefusal
    from desktop.jobs.request import job_for

    def v1_only(name):
        return "/models/v1" if name == "trellis" else None

    job = job_for(JobRequest(images=["a.png"]), v1_only, "trellis")
    assert (job.kind, job.family, job.inputs, job.asked_settings) == ("generate", "trellis", ["a.png"], None)
    assert job_for(JobRequest(images=["a.png"], family="trellis2"), v1_only, "trellis").family == "trellis2"
    with pytest.raises(FamilyRefusal) as refused:
        job_for(JobRequest(images=["a.png"], family="trellis2"), v1_only, "trellis", refuse_not_installed=True)
    assert str(refused.value) == FAMILIES["trellis2"].unavailable()
    text = job_for(JobRequest(prompt=" a chair ", keep_result=True), v1_only, "trellis")
    assert (text.kind, text.prompt, text.family, text.inputs, text.keep_result) == ("text", "a chair", None, [], True)
    # a new look: its mesh as given (a sent file keeps its name), its family installed or refused at once
    look = job_for(JobRequest(mesh=("chair.glb", b"glTF"), images=[b"png"]), v1_only, "trellis2")
    assert (look.kind, look.family, look.mesh, look.inputs) == ("variant", "trellis", ("chair.glb", b"glTF"), [b"png"])
    gold = job_for(JobRequest(mesh="chair.glb", prompt="gold"), lambda name: None, "trellis")
    assert (gold.kind, gold.family, gold.prompt, gold.inputs) == ("variant", None, "gold", [])
    with pytest.raises(FamilyRefusal, match="TRELLIS.2 new look \\(PBR materials\\) needs TRELLIS.2, which is not "
                                            "installed here"):
        job_for(JobRequest(mesh="chair.glb", images=["a.png"], family="trellis2"), v1_only, "trellis")
    with pytest.raises(ValueError) as missing:          # the default look's family: which ones are installed instead
        job_for(JobRequest(mesh="chair.glb", images=["a.png"]), lambda name: name == "trellis2" or None, "trellis2")
    assert not isinstance(missing.value, FamilyRefusal)
    assert str(missing.value).endswith("(a new look from a prompt works; model_family trellis2 makes one with PBR "
                                       "materials here)")
    with pytest.raises(RequestError):
        job_for(JobRequest(mesh="chair.glb"), v1_only, "trellis")
