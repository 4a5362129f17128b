"""The Output settings box's layout: its controls under sub-headings (which files, the mesh in them, its texture,
where it stands, the preview), so that a long column reads as five short ones. Target triangles sits beside
Simplify: they are the two ways to size the mesh."""
from .lazy import gr
from .values import page_lines

# (sub-heading, its lines of setting names): a line of two is one row of the page.
OUTPUT_SECTIONS = (
    ("Destination and formats", (("destination",), ("formats",))),
    ("Mesh", (("target_faces", "simplify"), ("topology",), ("fill_holes", "print_ready"), ("lods", "draco"))),
    ("Texture", (("geometry_only", "normal_map"), ("texture_size", "texture_format"), ("bake_views", "bake_resolution"),
                 ("bake_mode",))),
    ("Placement", (("height", "pivot"), ("up", "units"))),
    ("Preview", (("video_frames", "video_resolution"),)),
)
HEADING_CLASS = "td-subheading"
# The level under the page's h1 (the accordions' labels are no headings): a screen reader's outline skips none;
# look.py draws them at the size they had as h4s.
HEADING_LEVEL = 2


def placed_lines(place: str):
    """The lines of controls of `place` (values.page_lines), each a list of rows; the output settings in
    OUTPUT_SECTIONS' lines instead, each section's sub-heading put on the page (in the layout open there) before
    its first line. An output setting no section names comes last, so that a new one never goes missing."""
    lines = page_lines(place)
    if place != "output":
        yield from lines
        return
    by_name = {row.name: row for line in lines for row in line}
    named = {name for _, section in OUTPUT_SECTIONS for line in section for name in line}
    for title, section in OUTPUT_SECTIONS:
        gr.Markdown(f"{'#' * HEADING_LEVEL} {title}", elem_classes=HEADING_CLASS)
        yield from ([by_name[name] for name in line] for line in section)
    yield from ([row for row in line if row.name not in named] for line in lines
                if any(row.name not in named for row in line))
