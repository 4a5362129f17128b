"""A job runner for the app's surfaces that records the settings it is given and refuses the job (the surfaces
answer with the refusal), so that a test sees what a page, a request or a command would have run, and nothing
runs."""


class Recorder:
    def __init__(self, outputs_dir):
        self.outputs_dir, self.model_path, self.text_model = outputs_dir, "m", None
        self.submitted = []

    def list(self):
        return []

    def fast_paths(self):
        return {"cpu": "CPU"}

    def submit(self, images, settings, **kw):
        self.submitted.append(settings)
        raise RuntimeError("recorded")

    def submit_request(self, request):
        return self.submit(list(request.images), request.settings)
