"""The /v1 job API's schemas (pydantic): every request and response of POST /v1/jobs, GET /v1/jobs/{id}, the
export, /v1/health and /v1/presets, built once on first use (v1.py serves them; server.py registers the request
schemas in the OpenAPI document).
"""

import functools
from typing import Literal, Optional, Union

from .common import MAX_IMAGES, error_body_model, parameter_fields, rule_type
from .families import FAMILIES, FAMILY_HELP
from ..settings import EXPORT_FIELDS, MAX_PROMPT_CHARS, ROWS

MAX_MESH_UPLOAD = 128 * 1024 * 1024     # a 3-D model file (a form part's limit; 2.5 M triangles as binary STL)


def _build_models():
    from pydantic import BaseModel, ConfigDict, Field, create_model

    from ..jobs import ERROR_KINDS

    forbid = ConfigDict(extra="forbid")
    settings_fields = {}
    for row in ROWS:
        kind, limits = rule_type(row.name) if row.kind != "preset" else (str, {})
        settings_fields[row.name] = (kind, Field(description=row.help, **limits))
    Settings = create_model("Settings", __doc__="Every parameter of a job.", **settings_fields)

    JobRequest = create_model(
        "JobRequest", __config__=forbid,
        __doc__="A new job plus settings (settings left out come from the preset). What it makes depends on what "
                "it is given: `images` -> an asset from the photo(s); `prompt` -> an asset from the text (text "
                "mode); `mesh` + `prompt` or `mesh` + one image -> that 3-D model with a new look.",
        images=(Optional[list[str]], Field(None, min_length=1, max_length=MAX_IMAGES,
                                           description="base64 image files (PNG, JPEG, WebP, ...; a data: URL prefix "
                                                       "is allowed); several images are views of one object; with "
                                                       "`mesh`: one image, the look to take")),
        prompt=(Optional[str], Field(None, max_length=MAX_PROMPT_CHARS,
                                     description="text mode: describe the object (e.g. 'a red wooden chair'); with "
                                                 "`mesh`: describe its new look. CLIP reads 77 tokens (about 60 "
                                                 "words): a longer prompt is cut, and the job's `warnings` say so. "
                                                 "The text model (text_model_size) is downloaded on first use")),
        mesh=(Optional[str], Field(None, description="a 3-D model to give a new look (GLB, OBJ, PLY or STL, base64; "
                                                     "at most 4 million triangles and "
                                                     f"{MAX_MESH_UPLOAD // 2 ** 20} MB); needs `prompt` or one "
                                                     "image")),
        mesh_name=(Optional[str], Field(None, max_length=255, description="the mesh's file name (e.g. chair.glb), "
                                                                           "for the job's records")),
        keep_result=(bool, Field(False, description="keep the decoded result in memory so that "
                                                    "POST /v1/jobs/{id}/export can write other files from it "
                                                    "without sampling again (only the most recent kept "
                                                    "results stay in memory)")),
        model_family=(Optional[Literal[FAMILIES]], Field(None, description=FAMILY_HELP)),
        **parameter_fields())

    export_fields = {k: v for k, v in parameter_fields().items() if k in EXPORT_FIELDS}
    ExportRequest = create_model(
        "ExportRequest", __config__=ConfigDict(extra="forbid", strict=True),
        __doc__="Files to write from a job's kept result; fields left out keep the job's values.", **export_fields)

    class Progress(BaseModel):
        stage: str = Field(description="current stage: queued, starting, load, preprocess, condition, "
                                       "sparse_structure, slat, decode, ply, video, encode, glb, obj, done")
        label: str = Field(description="the stage in words")
        step: int
        total: int = Field(description="steps of this stage (0 when it has none)")
        fraction: float = Field(ge=0, le=1, description="of the whole job")
        percent: int = Field(ge=0, le=100)
        eta_s: Optional[float] = Field(description="seconds left (null while unknown)")
        elapsed_s: float
        message: str

    class FileInfo(BaseModel):
        name: str
        kind: str = Field(description="glb, ply, obj, mtl, texture, mp4, input, preprocessed, settings, ...")
        url: str
        size_bytes: int
        content_type: str

    class LimitCheck(BaseModel):
        limit: str = Field(description="max_triangles, max_bytes.glb, watertight, outward, shells, flat_base, "
                                       "max_surface_removed, normal_map, faces_within, lods_within.LOD1, ...")
        wanted: Optional[Union[bool, int, float]] = Field(description="the limit's value")
        value: Optional[Union[bool, int, float]] = Field(description="the files' (null: a level not made)")
        met: bool
        text: str = Field(description="the verdict in words, with its numbers")

    class Limits(BaseModel):
        destination: Optional[str]
        met: bool = Field(description="every limit met")
        checks: list[LimitCheck] = Field(description="each limit with its verdict, levels of detail included")
        reasons: list[str] = Field(description="the text of each limit missed")

    class JobInfo(BaseModel):
        id: str
        kind: Literal["generate", "export", "text", "variant"] = Field(
            description="generate: from image(s); text: from a prompt; variant: a 3-D model's new look; export: "
                        "files from a kept result")
        source_id: Optional[str] = Field(description="export jobs: the job whose result they export")
        state: Literal["queued", "running", "done", "failed", "cancelled"]
        queue_position: Optional[int] = Field(description="0: next to start; null unless queued")
        progress: Progress
        error: Optional[str] = Field(description="what went wrong and what to do (failed or cancelled)")
        error_kind: Optional[Literal[ERROR_KINDS]] = Field(description="input, empty, oom, disk, model, "
                                                                         "background_removal, cancelled, interrupted, "
                                                                         "internal or damaged (an earlier job whose "
                                                                         "folder cannot be read)")
        files: list[FileInfo]
        settings: Settings
        seed: Optional[int] = Field(description="the seed used (null until the job starts)")
        device: Optional[str]
        out_dir: Optional[str] = Field(description="the job's folder on the server")
        created: float
        started: Optional[float]
        finished: Optional[float]
        keep_result: bool
        result_kept: bool = Field(description="an export can be made from this job now")
        prompt: Optional[str] = Field(None, description="text and variant jobs: the prompt")
        model_family: Optional[Literal[FAMILIES]] = Field(None, description="image jobs: the model family that runs "
                                                                            "it (trellis: TRELLIS v1, trellis2)")
        warnings: list[str] = Field(default_factory=list, description="what to know about the result (e.g. the "
                                                                      "prompt was longer than the model reads)")
        limits: Optional[Limits] = Field(None, description="the files against their destination's limits "
                                                           "(export.json): null without a destination or before "
                                                           "the files are written")

    class JobList(BaseModel):
        jobs: list[JobInfo] = Field(description="this page's jobs, oldest first (newest first with order=newest)")
        total: int = Field(description="jobs in all")
        offset: int
        limit: int
        next_offset: Optional[int] = Field(description="the offset of the next page (null: this is the last)")

    class FamilyInfo(BaseModel):
        id: Literal[FAMILIES] = Field(description="what model_family names it")
        words: str = Field(description="its name for people")
        about: str = Field(description="what it makes, in one line")
        pipeline_types: list[str] = Field(description="the pipeline types its jobs take (none: one path)")
        default_pipeline_type: Optional[str]
        unused_settings: list[str] = Field(description="settings its jobs do not use (given anyway: a warning)")
        installed: bool = Field(description="a job may name it here (it is among `families`)")

    class Health(BaseModel):
        status: Literal["ok"]
        api_version: str
        model: str
        model_family: Literal[FAMILIES] = Field(description="the image model family loaded now (before the first "
                                                            "job: that of its model folder): trellis (TRELLIS v1) or "
                                                            "trellis2 (TRELLIS.2)")
        families: list[Literal[FAMILIES]] = Field(description="the families a job's model_family may name here: its "
                                                             "model folder's, and the other one where it is installed")
        family_info: list[FamilyInfo] = Field(description="every model family the app knows, installed here or not: "
                                                          "its words, pipeline types and the settings it does not use")
        text_model: Optional[str] = Field(description="the text pipeline for prompts (null: the published one of "
                                                      "each job's text_model_size, downloaded on first use)")
        model_loaded: bool
        devices: list[str]
        fast_paths: dict[str, str] = Field(description="per device: whether the renderers' fast GPU kernels run "
                                                       "there and, on the slower PyTorch path, why")
        attention: dict = Field(description="the attention kernels asked for (dense, varlen: backend and set_by, "
                                            "\"default\" or the environment variable that chose it) and the auto "
                                            "rule; each job's timings name the kernels each stage ran")
        queued: int
        running: int
        auth_required: bool

    class Presets(BaseModel):
        default: str
        presets: dict[str, Settings]

    return dict(Settings=Settings, JobRequest=JobRequest, ExportRequest=ExportRequest, Progress=Progress,
                FileInfo=FileInfo, JobInfo=JobInfo, JobList=JobList, Health=Health, Presets=Presets,
                ErrorBody=error_body_model())


@functools.cache
def models() -> dict:
    return _build_models()
