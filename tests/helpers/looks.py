"""A small UV-mapped mesh for new-look tests and the rows a GLB stores, to compare a look's file with its input."""
import struct
from pathlib import Path

import numpy as np

from tests.helpers.gltf import glb_json


def uv_sphere(n_lon=12, n_lat=7, radius=1.5, centre=(4.0, -1.0, 2.5)):
    """A latitude-longitude sphere (y up) placed off the origin, with its own UVs: the seam column and the pole rows
    keep their own vertices, so every UV triangle is unfolded."""
    lon, lat = np.linspace(0, 2 * np.pi, n_lon + 1), np.linspace(0, np.pi, n_lat + 1)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    v = np.stack([np.sin(la) * np.cos(lo), np.cos(la), -np.sin(la) * np.sin(lo)], -1).reshape(-1, 3)
    v = (v * radius + centre).astype(np.float32).astype(np.float64)
    uv = np.stack([lo / (2 * np.pi), 1 - la / np.pi], -1).reshape(-1, 2).astype(np.float32).astype(np.float64)
    faces = []
    for i in range(n_lat):
        for j in range(n_lon):
            a = i * (n_lon + 1) + j
            b, c, d = a + 1, a + n_lon + 1, a + n_lon + 2
            if i > 0:
                faces.append([a, c, b])
            if i < n_lat - 1:
                faces.append([b, c, d])
    return v, np.array(faces, np.int64), uv


def glb_attribute(path, name) -> np.ndarray:
    """The rows of the first primitive's attribute (or "indices") as the GLB stores them."""
    data = Path(path).read_bytes()
    doc = glb_json(path)
    bin_start = 20 + struct.unpack_from("<I", data, 12)[0] + 8
    primitive = doc["meshes"][0]["primitives"][0]
    acc = doc["accessors"][primitive["indices"] if name == "indices" else primitive["attributes"][name]]
    view = doc["bufferViews"][acc["bufferView"]]
    start = bin_start + view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3}[acc["type"]]
    dtype = {5126: np.float32, 5125: np.uint32, 5123: np.uint16}[acc["componentType"]]
    return np.frombuffer(data, dtype, acc["count"] * width, start).reshape(-1, width)
