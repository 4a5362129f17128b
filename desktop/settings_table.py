"""Every generation setting, one row each (ROWS): what it is, what it accepts, what presets and the CPU give
it, and how each surface shows it. desktop/settings.py builds the GenerationSettings dataclass, its checks and
the old per-fact tables from these rows; the page (desktop/ui), the CLI flags (desktop/cli.py, shared by
generate, retexture and batch), the REST and StableProjectorz schemas (desktop/api), settings.json and
docs/SETTINGS.md all read them. Adding a setting is one row here, plus the line that passes its value to the
library.

A row (Setting) holds:
    name, kind, default, help   kind: "int", "float", "bool", "choice" (one of `choices`), "choices" (a tuple of
                                several of `choices`, e.g. formats) or "preset" (the preset's name)
    lo, hi                      the one range of a number, on every surface
    optional                    None is a value too (its help says what it means): ints and floats only
    step                        the page's slider step (a number without one gets a number box)
    presets                     {preset: value} where a preset differs from the default
    destinations                {destination: value}: what picking a destination (DESTINATION_LIST) sets
    cpu                         Cpu(value, why, formats): what a CPU job uses instead (see settings.for_device)
    export                      it only shapes the files written from a result: an export may change it
                                without sampling again
    ui, cli, panel              the page's control, the CLI flag, the StableProjectorz panel input (None: none);
                                ui.info is the page's one line of help (what it changes, what it costs)
    families (read-only)        the image model families that use it (each family declares what it ignores, and why)

Nothing here imports more than the standard library (and the families' declarations, which import no more).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional

from .families import FAMILIES

# Largest seed: the reference demo's int32 range, so a seed from it can be typed in here.
MAX_SEED = 2 ** 31 - 1

FORMATS = ("glb", "ply", "obj", "mp4", "stl", "3mf", "usdz")
MESH_FORMATS = ("glb", "obj", "stl", "3mf", "usdz")      # written from the one baked mesh (trellis.export.formats)
PIVOTS = ("origin", "center", "bottom")                 # origin: the pipeline's, as generated
UP_AXES = ("auto", "y", "z")                            # auto: each format's own (OBJ y, STL / 3MF z)
UNITS = ("m", "mm")
TEXTURE_FORMATS = ("png", "jpeg", "webp")
BAKE_MODES = ("fast", "opt")
MULTI_IMAGE_MODES = ("stochastic", "multidiffusion")
# Same values as trellis.pipelines.memory.PRECISIONS / OFFLOADS (a test keeps them equal); repeated
# here so that validating settings does not import torch.
PRECISIONS = ("auto", "fp16", "bf16", "fp32")
OFFLOADS = ("auto", "none", "model")
# The modes trellis.modules.attention.attention_precision takes (a test keeps them equal).
ATTENTIONS = ("exact", "8bit")
# The pipeline types of the families that have them (TRELLIS.2's; TRELLIS v1 has one path), as the families declare.
PIPELINE_TYPES = tuple(dict.fromkeys(t for f in FAMILIES.values() for t in f.pipeline_types))
DEFAULT_PIPELINE_TYPE = next(f.default_pipeline_type for f in FAMILIES.values() if f.pipeline_types)
# What the families that size their texture by pipeline type bake where it is left at the default (as declared).
FAMILY_TEXTURES = "; ".join(f"{f.words} bakes its pipeline type's: {f.texture_words()}" for f in FAMILIES.values()
                            if f.texture_sizes)
# The published text pipelines (microsoft/TRELLIS-text-<size>): text jobs and new looks from a prompt.
TEXT_MODEL_SIZES = ("base", "large", "xlarge")
DEFAULT_TEXT_MODEL_SIZE = "xlarge"
TEXT_SIZES_GB = {"base": "0.7", "large": "2.3", "xlarge": "4.1"}     # the flows; CLIP adds 1.7 GB (once)

KINDS = ("int", "float", "bool", "choice", "choices", "preset")
# Where the page shows a control: its three settings accordions, and the tabs whose inputs it belongs to.
PLACES = ("generation", "output", "memory", "multi", "text", "variant")


class Preset(NamedTuple):
    name: str
    label: str            # the page's button
    about: str


PRESET_LIST = (
    Preset("fast", "Fast", "quick look: fewer steps, a smaller texture and a shorter preview (TRELLIS.2: the 512 "
                           "grid)"),
    Preset("balanced", "Balanced", "the reference demo's defaults: 12 + 12 steps, guidance 7.5 / 3.0, 1024² "
                                   "texture (TRELLIS.2: its pipeline type's, 2048² at 1024³)"),
    Preset("high", "High", "more sampling steps, a 2048² texture baked from the reference's 100 views (TRELLIS.2: "
                           "the 1536 cascade)"),
    Preset("low-vram", "Low VRAM", "small GPUs: each network on the GPU only while it runs, fp16 torsos"),
)
DEFAULT_PRESET = "balanced"


class Destination(NamedTuple):
    name: str
    label: str            # the page's choice
    about: str


# Where the files go: picking one sets the export rows' `destinations` values (settings given beside it win), and
# the export report checks the destination's limits (trellis.export.report.DESTINATION_LIMITS).
DESTINATION_LIST = (
    Destination("none", "None", "the output settings as they are, no limits checked"),
    Destination("web", "Web / Shopify", "GLB with a JPEG texture and Draco geometry and a USDZ beside it (iOS AR), "
                                        "standing on its base; at most 100 k triangles and a 15 MB GLB"),
    Destination("game", "Game engine", "GLB with a normal map, standing on its base, with two levels of detail "
                                       "(25 % and 6 % of the triangles) that share its texture"),
    Destination("print", "3D print", "STL and 3MF in millimetres, z up, without texture: one closed shell with a "
                                     "flat base"),
)
DESTINATION_NAMES = tuple(d.name for d in DESTINATION_LIST)


class Cpu(NamedTuple):
    value: Any
    why: str              # for the job's warning when the value was lowered
    formats: tuple        # the files it shapes: the warning names it only when the job writes one of them


class Ui(NamedTuple):
    place: str                       # one of PLACES
    label: str                       # also names the control in the page's messages
    info: Optional[str] = None       # a line under the control
    widget: Optional[str] = None     # choices: "radio" (the default) or "dropdown"
    labels: tuple = ()               # (shown text, value) per choice, when the raw values are not enough
    preset: bool = True              # the preset buttons set it (False: seed, formats, ... keep their value)
    wide: bool = False               # a line of its own (a choice set always is)
    elem_id: Optional[str] = None    # the page element's id (default td-<name>)
    ui_range: Optional[tuple] = None # a slider's (lo, hi) where the useful values lie; typing beyond it widens it


class Cli(NamedTuple):
    flag: str                        # bools: --x gives --x / --no-x; a flag "--no-x" alone sets False
    help: Optional[str] = None       # default: the row's help; numbers add their range
    # Several rows may share one flag (--steps sets both stages); the first row's help and range are shown.


class Panel(NamedTuple):
    code: str                        # the request field it fills (StableProjectorz's name when it differs)
    label: str                       # "\\n" is a line break under a dial
    decimals: int = 2                # sliders: decimals shown


@dataclass(frozen=True)
class Setting:
    name: str
    kind: str
    default: Any
    help: str
    lo: Any = None
    hi: Any = None
    choices: tuple = ()
    optional: bool = False
    step: Any = None
    presets: dict = field(default_factory=dict)
    destinations: dict = field(default_factory=dict)
    cpu: Optional[Cpu] = None
    export: bool = False
    ui: Optional[Ui] = None
    cli: Optional[Cli] = None
    panel: Optional[Panel] = None

    @property
    def families(self) -> tuple:
        """The ids of the image model families whose jobs use this setting (each family declares, with why, the
        settings it does not use: desktop/families)."""
        return tuple(name for name, family in FAMILIES.items() if family.uses(self.name))


def triangle_share(kept: float) -> str:
    """A fraction of the mesh's triangles as people read it ("2.5 %"): the Simplify help and the Export-again line
    name the same number."""
    return f"{round(kept * 100, 2):g} %"


def text_size_labels() -> tuple:
    return tuple((f"{size} (~{TEXT_SIZES_GB.get(size, '?')} GB)", size) for size in TEXT_MODEL_SIZES)


ROWS: tuple = (
    Setting("preset", "preset", DEFAULT_PRESET,
            "the preset these settings started from (fast, balanced, high, low-vram or custom)"),
    Setting("seed", "int", 0, "random seed (used when randomize_seed is false)", lo=0, hi=MAX_SEED,
            ui=Ui("generation", "Seed", preset=False, info="the same seed, settings and input make the same model "
                  "again; typing a seed unticks Randomize"),
            cli=Cli("--seed", "random seed; default: a new one per job, recorded in its settings.json")),
    Setting("randomize_seed", "bool", True,
            "draw a fresh seed for each job (the seed used is recorded in settings.json)",
            ui=Ui("generation", "Randomize seed", preset=False, elem_id="td-randomize",
                  info="a new seed for each Generate; the one used is shown with the result")),
    Setting("ss_steps", "int", 12, "sampling steps of stage 1 (the coarse structure)", lo=1, hi=500, step=1,
            presets={"fast": 8, "high": 25}, ui=Ui("generation", "Shape steps (stage 1)", ui_range=(4, 50),
                                                      info="more steps: a cleaner overall shape; the time grows "
                                                           "with them (8-25 is plenty)"),
            cli=Cli("--steps", "sampling steps of both stages"), panel=Panel("ss_steps", "structure steps")),
    Setting("ss_cfg", "float", 7.5, "guidance strength of stage 1 (how closely the structure follows the image)",
            lo=0.0, hi=100.0, step=0.1, ui=Ui("generation", "Shape guidance (stage 1)", ui_range=(0.0, 15.0),
                                      info="how strictly the shape follows the input: higher is stricter, too high "
                                           "looks harsh (5-10 usual); costs no time"),
            panel=Panel("ss_strength", "structure\\nguidance", 1)),
    Setting("slat_steps", "int", 12, "sampling steps of stage 2 (the detailed latent)", lo=1, hi=500, step=1,
            presets={"fast": 8, "high": 25}, ui=Ui("generation", "Detail steps (stage 2)", ui_range=(4, 50),
                                                      info="more steps: finer surface detail and colour; the time "
                                                           "grows with them"),
            cli=Cli("--steps"), panel=Panel("slat_steps", "detail steps")),
    Setting("slat_cfg", "float", 3.0, "guidance strength of stage 2", lo=0.0, hi=100.0, step=0.1,
            ui=Ui("generation", "Detail guidance (stage 2)", ui_range=(0.0, 15.0),
                  info="how strictly detail and colour follow the input (2-5 usual); costs no time"), panel=Panel("slat_strength", "detail\\nguidance", 1)),
    Setting("pipeline_type", "choice", DEFAULT_PIPELINE_TYPE,
            "TRELLIS.2 models only: 512 (a 512^3 grid, the fastest: about a fifth of 1024's time), 1024 (1024^3 in "
            "one pass), 1024_cascade (512 then refined to 1024^3: the reference's default, about the cost of 1024 "
            "with a steadier shape) or 1536_cascade (1536^3, the finest: about three times 1024's time and the most "
            "GPU memory, 24 GB or more); the fast preset picks 512 and the high one 1536_cascade, as the reference "
            "app's three sizes; TRELLIS v1 models ignore it", choices=PIPELINE_TYPES,
            # the presets' sizes: fast the quick look, high the finest; low-VRAM keeps 1024_cascade (it fits 6 GiB)
            presets={"fast": "512", "high": "1536_cascade"},
            ui=Ui("generation", "TRELLIS.2 pipeline type", widget="dropdown", labels=(
                ("512 (fastest)", "512"), ("1024 (one pass)", "1024"), ("1024 cascade (default)", "1024_cascade"),
                ("1536 cascade (finest, slowest)", "1536_cascade")),
                info="TRELLIS.2 only: finer grids give sharper shapes and cost more time and GPU memory"),
            cli=Cli("--pipeline-type", "TRELLIS.2 model folders only: 512, 1024, 1024_cascade (default) or "
                                       "1536_cascade (finer: slower, more GPU memory)")),
    Setting("simplify", "float", 0.975, "fraction of the decoder mesh's triangles removed; the file gets the rest "
            f"(0.975: {triangle_share(1 - 0.975)}, about 18 k faces for a typical object; 0 keeps all)", lo=0.0,
            hi=0.99, step=0.005, export=True, ui=Ui("output", "Simplify (share of triangles removed)",
                                                    info=f"0.975 keeps {triangle_share(1 - 0.975)} of the triangles: "
                                                         "a light file; lower keeps more detail, a bigger file and a "
                                                         "slower bake"),
            cli=Cli("--simplify", "fraction of triangles removed"), panel=Panel("mesh_simplify", "mesh\\nsimplify", 3)),
    Setting("fill_holes", "bool", True, "remove hidden inner faces and close small holes (slow on a CPU)",
            export=True, ui=Ui("output", "Fill holes (slow on a CPU)",
                                    info="removes hidden inner faces and closes small holes: a cleaner mesh; "
                                         "minutes on a CPU")),
    Setting("texture_size", "int", 1024, "side of the GLB / OBJ texture in pixels" + (
            f" (at this default, unless you set it yourself, {FAMILY_TEXTURES})" if FAMILY_TEXTURES else ""),
            lo=64, hi=8192, step=64,
            # low-VRAM keeps 1024² for TRELLIS.2 too: its 6 / 8 GiB runs were measured with it
            presets={"fast": 512, "high": 2048, "low-vram": 1024}, export=True,
            # On a CPU: 512² bake views cannot fill a 1024² texture with detail, and its solve costs 4x more.
            cpu=Cpu(512, "each doubling of the side takes about 4x as long to bake", ("glb", "obj")),
            ui=Ui("output", "Texture size (pixels)", ui_range=(256, 4096),
                  info="sharper colours; each doubling takes about 4x as long to bake and a 4x bigger image"),
            cli=Cli("--texture-size", "texture side in pixels, GLB / OBJ"),
            panel=Panel("texture_size", "texture size")),
    Setting("bake_mode", "choice", "fast", "texture baking: fast (least squares) or opt (optimiser, slower)",
            choices=BAKE_MODES, export=True,
            ui=Ui("output", "Texture bake", labels=(("Fast", "fast"), ("Refined (several times slower)", "opt")),
                  info="Fast suits most objects; Refined adjusts the texture to the views again and again for "
                       "slightly crisper colour")),
    # The reference bakes from 100 views; the fast bake measured as good at 50 (trellis to_glb docs).
    Setting("bake_views", "int", 50, "number of renders the texture is baked from", lo=1, hi=1000, step=1,
            presets={"fast": 50, "high": 100}, export=True,
            cpu=Cpu(24, "each is a render of the Gaussians", ("glb", "obj")), ui=Ui("output", "Bake views", ui_range=(8, 200),
                                                                                 info="renders around the object the "
                                                                                 "texture is painted from: more cover "
                                                                                 "more of it; each costs a render")),
    Setting("bake_resolution", "int", 1024, "side of those renders in pixels", lo=32, hi=4096, step=32,
            presets={"fast": 512}, export=True,
            cpu=Cpu(512, "each bake render takes seconds at the larger size", ("glb", "obj")),
            ui=Ui("output", "Bake render size (pixels)", ui_range=(256, 2048),
                  info="size of each of those renders: larger gives the texture more detail to take, slower")),
    Setting("destination", "choice", "none", "where the files go: " + "; ".join(
                f"{d.name} ({d.about})" for d in DESTINATION_LIST) + ". Picking one sets the output settings it "
            "names; settings given beside it win", choices=DESTINATION_NAMES, export=True,
            ui=Ui("output", "Destination", preset=False, wide=True, labels=tuple((d.label, d.name) for d in DESTINATION_LIST),
                  info="sets the output settings below for it, and the report under the result checks its limits"),
            cli=Cli("--destination")),
    Setting("formats", "choices", ("glb", "ply", "mp4"), "files to write, from " + ", ".join(FORMATS),
            destinations={"web": ("glb", "mp4", "usdz"), "game": ("glb", "mp4"), "print": ("mp4", "stl", "3mf")},
            choices=FORMATS, export=True, ui=Ui("output", "Output formats", preset=False,
                                                info="the files written; each is offered for download under the "
                                                     "result", labels=(
                ("GLB (textured mesh)", "glb"), ("Gaussian splats (PLY)", "ply"), ("OBJ (+ MTL, PNG)", "obj"),
                ("MP4 preview", "mp4"), ("STL (3D print)", "stl"), ("3MF (3D print)", "3mf"),
                ("USDZ (iOS AR)", "usdz"))),
            cli=Cli("--formats")),
    Setting("target_faces", "int", None, "triangles in the exported mesh (instead of Simplify's fraction); none: "
            "use Simplify", lo=100, hi=2_000_000, optional=True, export=True,
            ui=Ui("output", "Target triangles (0: use Simplify)", preset=False,
                  info="a triangle budget for the file, e.g. 50000 (games, web), used instead of Simplify's share"),
            cli=Cli("--target-faces")),
    Setting("topology", "choice", "triangles", "faces of the mesh files: triangles, or quads (a quad remesh of the "
            "surface with its texture baked again: OBJ and USDZ keep the quads, the GLB holds them as triangle "
            "pairs; Target triangles then counts quads)", choices=("triangles", "quads"), export=True,
            ui=Ui("output", "Topology", preset=False, labels=(("Triangles", "triangles"), ("Quads (for rigging, "
                                                                                           "sculpting)", "quads")),
                  info="quads: an even quad mesh artists can edit; the OBJ keeps the quads; the remesh of a "
                       "large mesh takes a minute or more"),
            cli=Cli("--topology")),
    Setting("normal_map", "bool", False, "bake a tangent-space normal map from the dense mesh into the GLB (the "
            "detail the decimation removed)", presets={"high": True}, destinations={"game": True}, export=True,
            ui=Ui("output", "Normal map (GLB)", info="the fine detail the simplification removed, as a normal map: "
                                                     "richer shading in engines; a slightly longer bake"), cli=Cli("--normal-map")),
    Setting("height", "float", None, "real-world height of the object in metres; none: as generated (about 1)",
            lo=0.001, hi=1000.0, optional=True, export=True,
            ui=Ui("output", "Height in metres (0: as generated)", preset=False,
                  info="scales the file to this real height, e.g. 0.9 for a chair; 0 or empty: about 1 m"),
            cli=Cli("--height")),
    Setting("pivot", "choice", "origin", "where the file's origin is: origin (as generated), center (of the "
            "bounding box) or bottom (centre of its base: it stands on the ground)", choices=PIVOTS, export=True,
            destinations={"web": "bottom", "game": "bottom", "print": "bottom"},
            ui=Ui("output", "Pivot", preset=False, labels=(("As generated", "origin"), ("Centre", "center"),
                                                           ("Bottom (stands on the ground)", "bottom")),
                  info="where the file's origin is, the point it turns and is placed by in other programs"),
            cli=Cli("--pivot")),
    Setting("up", "choice", "auto", "up axis of OBJ, STL and 3MF: auto (OBJ y, STL / 3MF z), y or z; GLB and USDZ "
            "are y up by their specifications", choices=UP_AXES, export=True, destinations={"print": "z"},
            ui=Ui("output", "Up axis (OBJ, STL, 3MF)", preset=False, labels=(
                ("Each format's usual", "auto"), ("Y up", "y"), ("Z up", "z")),
                info="GLB and USDZ are always Y up; change it only if the model lies on its side in your program"),
            cli=Cli("--up")),
    Setting("units", "choice", "m", "units of OBJ, STL and 3MF: m or mm (GLB and USDZ are in metres)", choices=UNITS,
            export=True, destinations={"print": "mm"}, ui=Ui("output", "Units (OBJ, STL, 3MF)", preset=False, labels=(
                ("Metres", "m"), ("Millimetres", "mm")), info="slicers for 3D printing expect millimetres"),
            cli=Cli("--units")),
    Setting("geometry_only", "bool", False, "mesh files without texture or UVs", export=True,
            destinations={"print": True},
            ui=Ui("output", "Geometry only", preset=False, info="the shape without colours: smaller files, no "
                                                                 "texture bake (faster)"), cli=Cli("--geometry-only")),
    Setting("texture_format", "choice", "png", "texture encoding in the GLB (and USDZ): png (lossless), jpeg or "
            "webp (GLB only, smallest; needs a viewer with EXT_texture_webp)", choices=TEXTURE_FORMATS, export=True,
            destinations={"web": "jpeg"}, ui=Ui("output", "Texture format", preset=False, labels=(
                ("PNG (exact)", "png"), ("JPEG (smaller)", "jpeg"), ("WebP (smallest, GLB only)", "webp")),
                info="how the texture image is stored in the GLB and USDZ"), cli=Cli("--texture-format")),
    Setting("draco", "bool", False, "Draco-compress the GLB's geometry (KHR_draco_mesh_compression: a several times "
            "smaller mesh; three.js with its Draco loader, <model-viewer>, Babylon.js, Blender and Shopify read it)",
            export=True, destinations={"web": True}, ui=Ui("output", "Draco compression (GLB)", preset=False,
                                                       info="a several times smaller GLB mesh; a few old viewers "
                                                            "cannot read it"),
            cli=Cli("--draco")),
    Setting("lods", "int", 1, "levels of detail: 1 (the model alone) or up to 4, each further GLB (model_lod1.glb, "
            "...) with a quarter of the previous one's triangles (within 10 %) and the same texture; a level below "
            "what keeps the silhouette is not made, and the job says so", lo=1, hi=4, step=1,
            export=True, destinations={"game": 3}, ui=Ui("output", "Levels of detail (GLB)", preset=False,
                                                     info="extra lighter GLBs for far away in games, each a quarter "
                                                          "of the triangles"),
            cli=Cli("--lods")),
    Setting("print_ready", "bool", False, "STL and 3MF as one closed body wound outward with a flat base: the "
            "largest part with its holes closed, or where that is not one body the whole surface rebuilt from 1 % "
            "cells; the bottom cut flat (2 % of the height, more for a narrow foot); export.json says how much of "
            "the surface was left out", export=True, destinations={"print": True},
            ui=Ui("output", "Print-ready shell (STL, 3MF)", preset=False,
                                            info="one closed shell with a flat base that a slicer accepts"), cli=Cli("--print-ready")),
    Setting("preprocess", "bool", True, "remove the background of images without transparency",
            ui=Ui("memory", "Remove background", preset=False, wide=True,
                  info="for photos without transparency; a PNG with transparency is always cropped to its object"),
            cli=Cli("--no-background-removal", "use the image as it is (transparent PNGs are still cropped to their "
                                               "object)")),
    Setting("multi_image_mode", "choice", "stochastic",
            "how several views of one object are combined: stochastic or multidiffusion", choices=MULTI_IMAGE_MODES,
            ui=Ui("multi", "How the views are combined", preset=False, elem_id="td-multi-mode",
                  labels=(("Take turns (one view per step)", "stochastic"),
                          ("Blend all views every step", "multidiffusion")),
                  info="taking turns usually suits photos that differ a lot; blending is smoother and a little "
                       "slower")),
    Setting("video_frames", "int", 120, "frames of the turntable preview video", lo=1, hi=3000, step=1,
            presets={"fast": 60}, export=True, cpu=Cpu(60, "each frame is a render", ("mp4",)),
            ui=Ui("output", "Preview frames", ui_range=(24, 240),
                  info="length of the turntable video (24 a second); each frame is a render")),
    Setting("video_resolution", "int", 512, "side of the preview video in pixels", lo=16, hi=4096, step=16,
            presets={"fast": 384}, export=True, cpu=Cpu(384, "render time grows with the pixels", ("mp4",)),
            ui=Ui("output", "Preview size (pixels)", ui_range=(128, 1024),
                  info="side of the turntable video; render time grows with the pixels")),
    Setting("video_fps", "int", 24, "frames per second of the preview video", lo=1, hi=240, step=1, export=True),
    Setting("precision", "choice", "auto", "network precision: auto, fp16, bf16 or fp32", choices=PRECISIONS,
            presets={"low-vram": "fp16"},
            ui=Ui("memory", "Precision", widget="dropdown",
                  info="auto: fp16 on a GPU (fp32 on Pascal cards with 8 GB or more), fp32 on a CPU")),
    Setting("offload", "choice", "auto", "GPU memory use: auto, none, or model (each network on the GPU only while "
            "it runs)", choices=OFFLOADS, presets={"low-vram": "model"},
            ui=Ui("memory", "GPU memory offloading", widget="dropdown",
                  info="model: each network on the GPU only while it runs")),
    # An approximation with a cost on fast GPUs (docs/benchmarks/attention_8bit.md): never a default, in no preset. No
    # CPU value: a CPU job keeps it (the 8-bit maths' PyTorch twin runs there, slower than exact), and a user's own
    # value is never lowered anyway.
    Setting("attention", "choice", "exact", "attention arithmetic of the sampling: exact, or 8bit (approximate "
            "attention: int8 Q·K, fp8 P·V; the asset changes a little; slower than exact on data-centre GPUs, meant "
            "for cards whose exact attention kernels are slow or missing; on a CPU several times slower than exact); "
            "check it on your images with `python -m desktop verify-fast-paths`", choices=ATTENTIONS,
            ui=Ui("memory", "Attention", labels=(("Exact", "exact"), ("8-bit (approximate)", "8bit")),
                  info="8-bit: approximate attention (int8 Q·K, fp8 P·V): the asset changes a little; slower than "
                       "exact on data-centre GPUs; check it on your images with `python -m desktop "
                       "verify-fast-paths`"),
            cli=Cli("--attention", "attention arithmetic: exact (default) or 8bit (approximate: int8 Q·K, fp8 P·V; the "
                                   "asset changes a little; slower than exact on data-centre GPUs; check it with "
                                   "`python -m desktop verify-fast-paths`)")),
    # Counts what PyTorch reserves (the CUDA context comes on top: trellis.core.device); the low-VRAM preset's whole
    # job fits 2 GiB (docs/benchmarks/memory.md), so its 2.5 leaves head room. An export may change it too.
    Setting("vram_budget", "float", None, "GPU memory the whole job may take, in GiB (what PyTorch reserves; the "
            "CUDA context, about 0.5 GiB, comes on top): precision, offloading and the export's batch sizes are "
            "picked to fit, and going over ends the job with an out-of-memory error; none: no budget, the job takes "
            "what is free", lo=1.0, hi=1024.0, optional=True, presets={"low-vram": 2.5}, export=True,
            ui=Ui("memory", "VRAM budget in GiB (0: none)",
                  info="leaves the rest of the GPU to other programs (Blender, a game engine)"),
            cli=Cli("--vram-budget")),
    Setting("keep_mesh", "bool", True, "new looks: bake the look onto the 3-D model itself (its vertices, faces, UVs, "
            "scale and pivot unchanged; a new UV atlas where it has no usable UVs) instead of exporting the re-made "
            "shape", ui=Ui("variant", "Keep my mesh (and its UVs)", preset=False, wide=True,
                           info="off: the shape is made again from the model's voxels (new topology and UVs)"),
            cli=Cli("--keep-mesh", "new looks: keep the model's own mesh and UVs (--no-keep-mesh: make the shape "
                                   "again)")),
    Setting("text_model_size", "choice", DEFAULT_TEXT_MODEL_SIZE,
            "text model for prompts: base, large or xlarge (bigger: better, slower, larger download)",
            choices=TEXT_MODEL_SIZES,
            ui=Ui("text", "Text model size", preset=False, labels=text_size_labels(),
                  info="downloaded on its first use (once), then loaded; bigger follows prompts better, slower; "
                       "also used by New look with a prompt"),
            cli=Cli("--text-size", "size of the text model for prompts (default xlarge; base and large are smaller "
                                   "downloads)")),
)
