"""Hostile JSON bodies against a live API server (uvicorn in a thread, the tiny pipeline): hypothesis
builds bodies with depth and size extremes (deep nesting, huge arrays and strings, integers of thousands
of digits, NaN and infinity, wrong types, truncated or non-UTF-8 text) for every route that reads JSON.
No answer may be a 5xx, none may start a job (the images are never images), and the server stays up."""
import base64
import json
import math
import time

import httpx
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from desktop.api import create_app
from desktop.jobs import JobRunner
from tests.helpers.servers import LiveServer

pytestmark = pytest.mark.slow

ROUTES = ["/v1/jobs", "/v1/jobs/nope/export", "/v1/3d/generations", "/generate", "/generate_no_preview",
          "/generate_multi_preview"]
# Every field of the JSON bodies (from the schemas) and a few that exist nowhere.
FIELDS = ["images", "preset", "seed", "randomize_seed", "ss_steps", "ss_cfg", "slat_steps", "slat_cfg", "simplify",
          "texture_size", "bake_mode", "bake_views", "bake_resolution", "fill_holes", "video_frames",
          "video_resolution", "formats", "precision", "offload", "preprocess", "multi_image_mode", "keep_result",
          "single_multi_img_input", "image_base64", "image_list_base64", "ss_sampling_steps", "slat_sampling_steps",
          "mesh_simplify_ratio", "skip_videos", "preview_frames", "preview_resolution", "generate_what", "__proto__", ""]
NOT_AN_IMAGE = base64.b64encode(b"GIF89a but not really an image").decode()


def nested(depth: int, opener: str = "[") -> str:
    if opener == "[":
        return "[" * depth + "0" + "]" * depth
    return '{"a":' * depth + "0" + "}" * depth


# (beyond 4300 digits, which Python's json will not write, they come as raw text below)
big_ints = st.sampled_from([2 ** 63, -2 ** 63 - 1, 2 ** 64 + 1, 10 ** 30, 10 ** 4299])
floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([math.nan, math.inf, -math.inf, 1e308, 5e-324, -0.0])
huge_strings = st.integers(0, 3_000_000).map(lambda n: "A" * n) | st.integers(0, 200_000).map(lambda n: "\u00e9\U0001f600" * n)
huge_arrays = st.integers(0, 300_000).map(lambda n: [0] * n) | st.integers(0, 40).map(lambda n: [NOT_AN_IMAGE] * n)
leaves = (st.none() | st.booleans() | st.integers() | big_ints | floats | st.text(max_size=30) | huge_strings
          | huge_arrays | st.just(NOT_AN_IMAGE))
values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                           max_size=4), max_leaves=8)


@st.composite
def objects(draw):
    """A body object: some real fields with extreme values; images (when present) never decode to one."""
    body = draw(st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=12), values, max_size=6))
    if draw(st.booleans()):
        field = draw(st.sampled_from(["images", "single_multi_img_input", "image_base64", "image_list_base64"]))
        body.setdefault(field, draw(st.sampled_from([[NOT_AN_IMAGE], NOT_AN_IMAGE, ["not base64!"], []])))
    return body


raw_texts = st.one_of(
    st.integers(1, 200_000).map(nested),                                   # deep lists
    st.integers(1, 50_000).map(lambda d: nested(d, "{")),                  # deep objects
    st.integers(1, 100_000).map(lambda d: '{"images": ' + "[" * d),        # deep and cut off
    st.sampled_from(['{"seed": 1', '{"seed": 1}}', "", " ", "null", "\ufeff{}", '{"seed": 1, "seed": "x"}',
                     '{"images": ["' + NOT_AN_IMAGE + '"], "seed": ' + "9" * 5000 + "}",
                     '{"seed": 1e999999}', '{"ss_cfg": NaN}', '{"ss_cfg": -Infinity}']),
)


@st.composite
def bodies(draw) -> bytes:
    kind = draw(st.sampled_from(["object", "value", "raw", "bytes"]))
    if kind == "object":
        return json.dumps(draw(objects()), allow_nan=True).encode()
    if kind == "value":                        # a body that is no object at all
        return json.dumps(draw(values), allow_nan=True).encode()
    if kind == "raw":
        return draw(raw_texts).encode()
    return draw(st.binary(max_size=200)) + b"\xff\xfe{"                     # not UTF-8


@pytest.fixture(scope="module")
def server(tiny_pipeline_dir, tmp_path_factory):
    runner = JobRunner(tiny_pipeline_dir, tmp_path_factory.mktemp("bodies_out"), device="cpu")
    live = LiveServer(create_app(runner))
    yield live
    live.close()
    runner.shutdown(cancel=True, wait=True, timeout=30)


def test_hostile_json_bodies_never_get_a_server_error(server):
    seen, failures = {}, []
    t0 = time.time()
    client = httpx.Client(base_url=server.url, timeout=60, headers={"content-type": "application/json"})

    @given(route=st.sampled_from(ROUTES), body=bodies())
    @settings(max_examples=150, deadline=None, database=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @example(route="/v1/jobs", body=nested(100_000).encode())
    @example(route="/generate", body=nested(100_000).encode())
    @example(route="/v1/jobs", body=f'{{"images": ["{NOT_AN_IMAGE}"], "seed": 1{"0" * 5000}}}'.encode())
    @example(route="/v1/jobs/nope/export", body=b'{"texture_size": ' + b"1" * 100_000 + b"}")
    @example(route="/generate", body=json.dumps({"single_multi_img_input": [NOT_AN_IMAGE] * 100_000}).encode())
    @example(route="/v1/jobs", body=json.dumps({"images": ["A" * 20_000_000]}).encode())
    @example(route="/generate_no_preview", body=json.dumps({"image_base64": NOT_AN_IMAGE, "ss_sampling_steps": math.nan},
                                                           allow_nan=True).encode())
    @example(route="/v1/jobs", body=json.dumps({"images": [NOT_AN_IMAGE], "formats": [["glb"]] * 100_000}).encode())
    @example(route="/v1/3d/generations", body=nested(100_000).encode())
    @example(route="/v1/3d/generations", body=json.dumps({"image": NOT_AN_IMAGE, "n": 1e308}).encode())
    def run(route, body):
        r = client.post(route, content=body)
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
        if r.status_code >= 500 or r.status_code < 400:
            failures.append((route, body[:120], r.status_code, r.text[:300]))
            return
        said = r.json()                                # every refusal says why (OpenAI's shape on its route)
        detail = said["error"]["message"] if route == "/v1/3d/generations" else said["detail"]
        assert detail, (route, body[:120], r.text[:300])
    try:
        run()
    finally:
        client.close()
    assert not failures, "\n".join(map(str, failures))
    assert set(seen) <= {400, 404, 413, 415, 422}, seen
    assert seen.get(422, 0) > 100, seen
    # Still up, and nothing was queued by any of it.
    assert httpx.get(server.url + "/ping").json()["status"] == "running"
    health = httpx.get(server.url + "/v1/health").json()
    assert health["queued"] == 0 and health["running"] == 0
    assert httpx.get(server.url + "/v1/jobs").json()["jobs"] == []
    print(f"{sum(seen.values())} bodies in {time.time() - t0:.1f} s: {seen}")
