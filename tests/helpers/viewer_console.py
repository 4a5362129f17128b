"""Which of a page's console errors belong to the 3D viewer (Gradio's Babylon.js) in a headless software-GL browser.

Babylon.js reports a shader it failed to compile over several console lines, from `Unable to compile effect:` to
one `Error: ...` line. A report for one of the viewer's own screen-space passes (Babylon's post-process vertex
shader: the attribute `position` alone and the uniform `scale`, drawing a quad for the viewer's environment and image
processing) is the viewer's: no model data and nothing of the page reaches that shader, so its failure in a headless
software-GL browser says nothing of either. A report for any other shader (a material or a shadow pass, which a
model's attributes and textures shape) and every other error are the page's.
"""

# The viewer's own messages in a headless browser: it tries WebGPU first (headless Chromium has none) and falls back
# to WebGL2; it can run one more frame after the scene it replaces is disposed, and drop a model load when a newer
# model arrives while the machine is busy (its render loop, not the page's code).
EXPECTED_CONSOLE_ERRORS = ("A fatal error occurred during WebGPU creation",
                           "Cannot read properties of null (reading 'postProcessManager')",
                           "New model is being loaded before previous model finished loading")
REPORT_START = "Unable to compile effect:"
REPORT_HEAD = "Error compiling effect"                 # logged just before a report whose compile threw
PASS_ATTRIBUTES = "Attributes: position"             # a screen-space pass's whole attribute list
PASS_UNIFORM = "scale"                                # the post-process vertex shader's uniform


def babylon_text(line: str) -> str:
    """The message of a Babylon.js logger line (`BJS - [hh:mm:ss]: message`); '' for any other line."""
    if not line.startswith("BJS - ["):
        return ""
    _, sep, rest = line.partition("]: ")
    return rest if sep else ""


def compile_reports(errors: list) -> tuple:
    """(the reports' line spans [start, end] with the end's `Error:` line, whether the last one is still open)."""
    spans, start = [], None
    for i, line in enumerate(errors):
        text = babylon_text(line)
        if text == REPORT_START and start is None:
            start = i - 1 if i and babylon_text(errors[i - 1]) == REPORT_HEAD else i
        elif start is not None and text.startswith("Error: "):
            spans.append((start, i))
            start = None
    return spans, start is not None


def screen_pass(report: list) -> bool:
    """Whether a compile report's lines are those of a screen-space pass (module docstring)."""
    texts = [babylon_text(line) for line in report]
    uniforms = next((t.split()[1:] for t in texts if t.startswith("Uniforms:")), [])
    return PASS_ATTRIBUTES in texts and PASS_UNIFORM in uniforms


def unexpected_errors(errors: list) -> list:
    """The console errors that are the page's: all of them less the viewer's expected messages and its compile
    reports for its screen-space passes. An unfinished report is kept whole, so it fails a check."""
    spans, _ = compile_reports(errors)
    dropped = set()
    for start, end in spans:
        if screen_pass(errors[start:end]):
            dropped.update(range(start, end + 1))
    return [e for i, e in enumerate(errors)
            if i not in dropped and not any(x in e for x in EXPECTED_CONSOLE_ERRORS)]
