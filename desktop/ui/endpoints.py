"""The gradio_client endpoints of the page (/generate, /status, /cancel): one image and a dict of settings
with the REST API's names in (and, as REST's, `model_family`: refused with what to do when the app runs the other
family), the job's state and files out."""
import copy
import os
from pathlib import Path

from ..jobs import folder as job_folder
from ..settings import GenerationSettings
from .lazy import gr
from .status import POLL_S, friendly_error, hide_paths

# The settings of the /generate example on the page's "Use via API" (a quick job: the fast preset, the GLB only).
EXAMPLE_SETTINGS = {"preset": "fast", "seed": 1, "formats": ["glb"]}


def example_file(path) -> dict:
    """A file on this computer as the API page's example of a file input: its snippet writes handle_file(path)."""
    path = Path(path).as_posix()        # the snippet quotes it as is: a backslash would start an escape
    return {"path": path, "url": path, "orig_name": os.path.basename(path), "meta": {"_type": "gradio.FileData"}}


class ApiEndpoints:
    """TrellisApp's named endpoints (a mixin: uses self.runner, self.defaults, self._results)."""

    def _add_api_endpoints(self, example_image=None) -> None:
        """/generate, /status and /cancel for gradio_client (and the page's "Use via API"): one image and a
        dict of settings with the REST API's names in, the job's state and files out. Their components
        are hidden: the page does not show them. The example of /generate on "Use via API" is
        ``example_image`` (one of the app's example images) with ``EXAMPLE_SETTINGS``."""
        with gr.Group(visible=False):
            image = gr.File(label="image", file_count="single", type="filepath")
            settings = gr.JSON(label="settings")
            # "Use via API" shows each input's example_payload(): File's is a PDF on GitHub, JSON's {"foo": "bar"}
            if example_image is not None:
                image.example_payload, image.example_value = (lambda: example_file(example_image),
                                                               lambda: str(example_image))
            settings.example_payload = settings.example_value = lambda: copy.deepcopy(EXAMPLE_SETTINGS)
            info = gr.JSON(label="job")
            model = gr.File(label=job_folder.NAMES["glb"])
            files = gr.File(label="files", file_count="multiple")
            trigger = gr.Button()
        api = dict(api_visibility="public", concurrency_limit=None)
        trigger.click(self.api_generate, [image, settings], [info, model, files], api_name="generate",
                      show_progress="hidden", api_description=(
                          "Queue a job for one image (gradio_client.handle_file(path)) with settings such as "
                          "{\"preset\": \"fast\", \"seed\": 1, \"formats\": [\"glb\"]} (names as in the "
                          "REST API's POST /v1/jobs, model_family and pipeline_type included; {} for the defaults). "
                          "Streams the job (its id first), then returns it with model.glb and every file. A "
                          "failed job raises with the reason."), **api)

        def status(job_id: str) -> dict:
            return self.api_status(job_id)

        def cancel(job_id: str) -> dict:
            return self.api_cancel(job_id)
        gr.api(status, api_name="status", api_description="A job's state, progress, error and file names.", **api)
        gr.api(cancel, api_name="cancel", api_description="Cancel a job (queued: at once; running: at its next "
                                                          "step); the job, with cancel_requested.", **api)

    def api_settings(self, values) -> GenerationSettings:
        """The settings dict of an API call -> GenerationSettings, checked as strictly as the REST API's JSON; its
        `model_family` (REST's) must be the app's."""
        from pydantic import ConfigDict, create_model

        from ..api.common import ApiError, ServerDefaults, build_settings, parameter_fields, validate
        from ..api.families import family_problem

        if isinstance(values, dict) and "model_family" in values:
            values = dict(values)
            problem = family_problem(self.runner, values.pop("model_family"))
            if problem:
                raise gr.Error(f"invalid settings: model_family: {problem}")
        model = create_model("UiSettings", __config__=ConfigDict(extra="forbid"), **parameter_fields())
        try:
            params = validate(model, values if values is not None else {}, loc_prefix=("settings",), strict=True)
            defaults = ServerDefaults(precision=self.defaults.precision, offload=self.defaults.offload)
            return build_settings(params.model_dump(exclude_none=True), defaults)
        except ApiError as err:
            detail = err.detail if isinstance(err.detail, str) else "; ".join(
                f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in err.detail)
            raise gr.Error(f"invalid settings: {detail}") from None

    def api_job(self, job) -> dict:
        """A job as the API endpoints report it (file names, not paths; upload paths hidden)."""
        d = job.to_dict()
        d.pop("inputs")
        d["files"] = {kind: os.path.basename(path) for kind, path in d["files"].items()}
        d["queue_position"] = self.runner.queue_position(job.id) if job.state == "queued" else None
        if d["error"]:
            d["error"] = hide_paths(d["error"], job.inputs)
        return d

    def _api_find(self, job_id: str):
        job = self.runner.get(job_id) if isinstance(job_id, str) else None
        if job is None:
            raise gr.Error(f"no job {job_id!r} (the id is in the first answer of /generate)")
        return job

    def api_generate(self, image, settings):
        from ..jobs import JobState

        if not image:
            raise gr.Error("give an image file (gradio_client: handle_file('photo.png'))")
        job_settings = self.api_settings(settings)
        family = settings.get("model_family") if isinstance(settings, dict) else None   # checked by api_settings
        try:
            job = self.runner.submit([image], job_settings, family=family or None)
        except (RuntimeError, ValueError) as err:     # the app is stopping; what its model cannot make (TRELLIS.2)
            raise gr.Error(f"cannot start a job: {err}") from None
        last = None
        try:
            while job.state not in JobState.FINISHED:
                p = job.progress
                now = (job.state, p.stage, p.step)
                if now != last:
                    last = now
                    yield self.api_job(job), None, None
                job.wait(POLL_S)
        finally:
            if job.state not in JobState.FINISHED:       # the call was cancelled (gradio_client's job.cancel())
                self.runner.cancel(job.id)
        info = self.api_job(job)
        if job.state == JobState.FAILED:
            raise gr.Error(f"job {job.id} failed: {hide_paths(friendly_error(job), job.inputs)}")
        folder = job_folder.JobFolder(job.out_dir) if job.out_dir else None
        glb = job.files.get("glb")
        yield info, glb, ([str(p) for p in folder.listed_files()] if folder and job.state == JobState.DONE else None)

    def api_status(self, job_id: str) -> dict:
        return self.api_job(self._api_find(job_id))

    def api_cancel(self, job_id: str) -> dict:
        job = self._api_find(job_id)
        requested = self.runner.cancel(job.id)
        return {**self.api_job(job), "cancel_requested": bool(requested)}
