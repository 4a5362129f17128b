"""The browser tests' sorting of console errors: the viewer's compile reports for its screen-space passes are its
own; a material's report, an unfinished report and every other error are the page's."""
from tests.helpers.viewer_console import compile_reports, unexpected_errors


def bjs(text):
    return f"BJS - [22:36:14]: {text}"


def report(attributes="position", error="Cannot read properties of null (reading 'createShader')", head=True,
           uniforms="scale textureSampler"):
    lines = [bjs("Error compiling effect")] if head else []
    return lines + [bjs("Unable to compile effect:"), bjs(f"Uniforms: {uniforms}"),
                    bjs(f"Attributes: {attributes}"), bjs("Defines:\n"), bjs(f"Error: {error}")]


def test_a_screen_pass_report_is_the_viewers():
    errors = ["page error: boom", *report(), "A fatal error occurred during WebGPU creation", *report(head=False)]
    assert compile_reports(errors) == ([(1, 6), (8, 12)], False)
    assert unexpected_errors(errors) == ["page error: boom"]


def test_a_materials_report_is_the_pages():
    errors = report("position normal uv", "FRAGMENT SHADER ERROR: 0:12: 'x' : undeclared identifier")
    assert unexpected_errors(errors) == errors
    # the attribute list must be the pass's whole list, not a prefix of a material's
    assert unexpected_errors(report("position normal")) == report("position normal")
    # a shadow pass draws the model by its positions alone, but with its own uniforms, not the quad's scale
    shadow = report(uniforms="viewProjection world biasAndScaleSM depthValuesSM")
    assert unexpected_errors(shadow) == shadow


def test_an_unfinished_report_stays_whole():
    errors = report()[:-1]
    assert compile_reports(errors) == ([], True)
    assert unexpected_errors(errors) == errors


def test_only_babylon_lines_count():
    # lines that merely carry the words, outside Babylon's logger, neither open nor close a report
    errors = ["Unable to compile effect:", "Attributes: position", "Error: x", bjs("Uniforms: a")]
    assert compile_reports(errors) == ([], False)
    assert unexpected_errors(errors) == errors
