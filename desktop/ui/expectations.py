"""What the Text and New look tabs say before Generate: a prompt's CLIP tokens as it is typed (and where the text
model stops reading), the text model sizes with what each downloads (base by default while none is installed), and
the dropped 3D model previewed with its triangle count. Everything here works offline: the tokenizer is read from
the files of an installed text model, else the count is an estimate."""
import html
import json
import os
import re
import tempfile
import threading

from ..settings_table import DEFAULT_TEXT_MODEL_SIZE, TEXT_MODEL_SIZES, TEXT_SIZES_GB
from .lazy import gr
from .values import file_of

CLIP_REPO = "openai/clip-vit-large-patch14"
CLIP_GB = "1.7"
# CLIP reads 77 tokens, two of them its start and end marks.
PROMPT_TOKENS = 75
# Roughly CLIP's split: letter runs, single digits, other signs; each piece is at least one token.
ESTIMATE_PIECES = re.compile(r"[^\W\d_]+|\d|[^\w\s]")


# ---------------------------------------------------------------------------------------------
# Where text models are on this machine (never the network)
# ---------------------------------------------------------------------------------------------

def _cached_file(repo: str, name: str):
    """A file of `repo` in the Hugging Face cache, or None (the cache only: nothing is fetched)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo, name)
    except Exception:               # no hub library, a broken cache: as good as absent
        return None
    return found if isinstance(found, str) and os.path.isfile(found) else None


def _model_dirs() -> list:
    return [os.environ["TRELLIS_MODEL_DIR"]] if os.environ.get("TRELLIS_MODEL_DIR") else []


def installed_text_sizes() -> list:
    """The published text model sizes found in the app's models folder or the Hugging Face cache."""
    found = []
    for size in TEXT_MODEL_SIZES:
        repo = f"microsoft/TRELLIS-text-{size}"
        local = any(os.path.isfile(os.path.join(d, repo.split("/")[1], "pipeline.json")) for d in _model_dirs())
        if local or _cached_file(repo, "pipeline.json"):
            found.append(size)
    return found


def default_text_size(installed: list) -> str:
    """The row's default where it is installed, else the largest installed, else the smallest download."""
    if DEFAULT_TEXT_MODEL_SIZE in installed or not installed:
        return DEFAULT_TEXT_MODEL_SIZE if installed else TEXT_MODEL_SIZES[0]
    return installed[-1]


def text_size_control(text_model) -> dict:
    """The Text model size control's choices, value, info and interactivity for this app."""
    if text_model:
        name = os.path.basename(os.path.normpath(str(text_model)))
        return dict(interactive=False, info=f"This app was started with --text-model {name}: it is used for every "
                                            f"prompt, whatever the size here.")
    installed = installed_text_sizes()
    clip = _tokenizer_folder(None) is not None
    labels = [(f"{size} (installed)" if size in installed else f"{size}: {TEXT_SIZES_GB[size]} GB download", size)
              for size in TEXT_MODEL_SIZES]
    once = "" if clip else f" The first one also downloads the text encoder (CLIP, {CLIP_GB} GB), once."
    return dict(choices=labels, value=default_text_size(installed),
                info=f"Downloaded on first use, then kept; bigger follows prompts better and runs slower.{once} Also "
                     f"used by New look with a prompt.")


# ---------------------------------------------------------------------------------------------
# Counting a prompt's tokens
# ---------------------------------------------------------------------------------------------

def _has_tokenizer(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, "tokenizer.json")) or all(
        os.path.isfile(os.path.join(folder, f)) for f in ("vocab.json", "merges.txt"))


def _tokenizer_folder(text_model):
    """The folder of the CLIP tokenizer the text model uses (its pipeline.json's text encoder), found the way the
    pipeline finds it but only on disk; None when it is not here yet."""
    from trellis.pipelines.model_sources import local_repo_folders, search_dirs

    name, root = CLIP_REPO, None
    if text_model and os.path.isdir(text_model):
        root = os.fspath(text_model)
        try:
            with open(os.path.join(root, "pipeline.json"), encoding="utf-8") as f:
                name = json.load(f)["args"]["text_cond_model"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
    candidates = [os.path.join(root, name)] if root else []
    if name.count("/") == 1:
        candidates += local_repo_folders(name, search_dirs(root, ()) if root else _model_dirs())
    for folder in candidates:
        if os.path.isdir(folder) and _has_tokenizer(folder):
            return folder
    cached = _cached_file(name, "tokenizer.json") if name.count("/") == 1 else None
    return os.path.dirname(cached) if cached else None


class PromptTokens:
    """A prompt's tokens as the text model counts them: its own tokenizer (loaded once, on the first prompt typed),
    or an estimate where no text model is installed yet."""

    def __init__(self, text_model=None):
        self.text_model = text_model
        self._lock = threading.Lock()
        self._tokenizer, self._looked = None, False

    def tokenizer(self):
        with self._lock:
            if not self._looked:
                self._looked = True
                folder = _tokenizer_folder(self.text_model)
                if folder:
                    from trellis.models.clip_tokenizer import ClipTokenizer

                    try:
                        tok = ClipTokenizer.from_folder(folder).tokenizer
                        tok.no_truncation()
                        tok.no_padding()
                        self._tokenizer = tok
                    except Exception:      # damaged or foreign tokenizer files: the estimate instead
                        self._tokenizer = None
            return self._tokenizer

    def count(self, prompt: str) -> tuple:
        """(tokens of the prompt without CLIP's two marks, exact?, the text read when it is cut else None)."""
        prompt = (prompt or "").strip()
        if not prompt:                  # nothing typed is 0 tokens on any tokenizer: no estimate to own up to
            return 0, True, None
        tok = self.tokenizer()
        if tok is None:
            return len(ESTIMATE_PIECES.findall(prompt)), False, None
        encoding = tok.encode(prompt)
        n = max(len(encoding.ids) - 2, 0)
        read = None
        if n > PROMPT_TOKENS:
            # The last token read is the 75th after the start mark: the text up to its end is what CLIP sees.
            read = prompt[:encoding.offsets[PROMPT_TOKENS][1]]
        return n, True, read

    def html(self, prompt: str) -> str:
        n, exact, read = self.count(prompt)
        if not exact and n > PROMPT_TOKENS:
            read = " ".join((prompt or "").split()[:max(PROMPT_TOKENS * 3 // 4, 1)])
        state = "over" if n > PROMPT_TOKENS else "ok"
        text = f"{'' if exact else 'about '}{n} / {PROMPT_TOKENS} tokens"
        if not exact:
            text += " (an estimate until the text model is installed)"
        if n > PROMPT_TOKENS:
            whole = (prompt or "").strip()
            words, part = read.split(), ""
            if whole[len(read):len(read) + 1].isalnum() and read[-1:].isalnum():     # cut inside a word
                part = f" and part of “{words.pop()}{whole[len(read):].split()[0]}”" if words else ""
            tail = " ".join(words[-6:])
            text += f": too long, the text model stops reading after “…{tail}”{part}. Put what matters first."
        return f'<div class="td-tokens" data-state="{state}" data-tokens="{n}">{html.escape(text)}</div>'


def wire_token_counts(tokens: PromptTokens, pairs) -> None:
    """Each (prompt box, count line) pair: the count follows the typing."""
    for box, line in pairs:
        box.change(tokens.html, box, line, api_visibility="private", show_progress="hidden",
                   concurrency_limit=None, trigger_mode="always_last")


# ---------------------------------------------------------------------------------------------
# The dropped 3D model
# ---------------------------------------------------------------------------------------------

class MeshPreview:
    """A dropped 3D model as the viewer shows it (a GLB: other formats are converted) and its triangle count."""

    def __init__(self):
        self._dir = tempfile.mkdtemp(prefix="trellis-desktop-mesh-")

    def show(self, payload):
        """(the viewer's model, the line under it) of an upload; nothing for no file or one that cannot be used
        (the status box says why)."""
        hidden = (gr.update(value=None, visible=False), gr.update(value="", visible=False))
        item = file_of(payload)
        if item is None:
            return hidden
        name, source = item
        from ..jobs import InputError, check_mesh

        try:
            ext = check_mesh(source if not isinstance(source, bytes) else (name, source))
            path = source if not isinstance(source, bytes) else self._write(name, source)
            shown, faces, vertices = self._viewable(path, ext)
        except Exception as err:        # the preview is a courtesy: the status box says what is wrong
            return hidden if isinstance(err, InputError) else (hidden[0], gr.update(
                value=f"{html.escape(name)}: cannot be previewed ({html.escape(str(err))})", visible=True))
        line = (f'<div class="td-mesh-stats" data-triangles="{faces}">{html.escape(name)}: <b>{faces:,} triangles</b>'
                f", {vertices:,} vertices</div>")
        return gr.update(value=shown, visible=True), gr.update(value=line, visible=True)

    def close(self) -> None:
        import shutil

        shutil.rmtree(self._dir, ignore_errors=True)

    def _write(self, name: str, data: bytes) -> str:
        fd, path = tempfile.mkstemp(dir=self._dir, suffix=os.path.splitext(name)[1])
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return path

    def _viewable(self, path: str, ext: str) -> tuple:
        """(a file the viewer shows, triangles, vertices) as the new look reads the model."""
        import trimesh

        from trellis.representations.mesh_input import load_mesh

        mesh = load_mesh(path, file_type=ext)
        if ext == ".glb":
            return path, len(mesh.faces), len(mesh.vertices)
        # The viewer reads a PLY as Gaussians and no glTF with side files: a GLB of the file's own scene instead.
        scene = trimesh.load(path, file_type=ext.lstrip("."), force="scene")
        fd, out = tempfile.mkstemp(dir=self._dir, suffix=".glb")
        os.close(fd)
        scene.export(out, file_type="glb")
        return out, len(mesh.faces), len(mesh.vertices)
