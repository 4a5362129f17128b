"""Networks built straight on the device they will run on, their weights read from disk into it.

The plain route (build on the CPU, fill from the file, move to the GPU) touches every weight three times in host
memory: the build allocates fp32 parameters and converts the torso to fp16 on the CPU, the file's pages are copied
into them, then they are copied again, from pageable memory, to the GPU. Here the network is built with the device
as PyTorch's default device (its parameters, buffers and constants made there, the fp16 conversion run there; the
``meta`` device is not used: its first use imports much of torch's compiler stack), and
filled from the file: on a GPU the file is read in chunks into two pinned buffers whose copies to the device overlap
the next chunk's read (docs/benchmarks/app.md#model-load). The result equals the plain route's, tensor for tensor
(tests/trellis/models, tests/gpu).
"""
from __future__ import annotations

import json
import os
import struct

import torch

from ..core.concurrency import side_stream

__all__ = ["build_on", "read_safetensors_to", "tensor_spans", "SAFETENSORS_DTYPES", "CHUNK_BYTES", "MAX_HEADER_BYTES",
           "MAX_TENSORS"]

# The safetensors format's dtype names (its header's "dtype" field).
SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                      "U8": torch.uint8, "BOOL": torch.bool}
# A network's header lists at most a few hundred tensors in ~120 KB (shared/spec/state_dict*): a file past these
# bounds is damaged or hostile, refused before its header is parsed or its entries are walked (a million entries
# would keep the loader busy for minutes).
MAX_HEADER_BYTES = 8 * 2 ** 20
MAX_TENSORS = 20_000
# Bytes per staging buffer: large enough that each read and copy runs at full speed, small enough to pin at once.
CHUNK_BYTES = 64 * 2 ** 20


def build_on(build, device) -> torch.nn.Module:
    """``build()`` (a network's constructor call) with every tensor it makes on `device`, then anything it made
    elsewhere (e.g. from NumPy) moved there."""
    device = torch.device(device)
    with torch.device(device):
        model = build()
    return model.to(device)


def _header(f, path) -> tuple[dict, int, int]:
    from . import WeightsFileError

    size = os.fstat(f.fileno()).st_size
    raw = f.read(8)
    if len(raw) < 8:
        raise WeightsFileError(path, "the file is damaged or incomplete (no safetensors header)")
    n = struct.unpack("<Q", raw)[0]
    if n > size - 8:
        raise WeightsFileError(path, "the file is damaged or incomplete (its header is longer than the file)")
    if n > MAX_HEADER_BYTES:
        raise WeightsFileError(path, f"the file is damaged or not a network's weights (its header is {n:,} bytes; a "
                                     f"network's is at most {MAX_HEADER_BYTES >> 20} MB)")
    try:
        header = json.loads(f.read(n))
    except (ValueError, UnicodeDecodeError) as err:
        raise WeightsFileError(path, f"the file is damaged or incomplete (header: {err})") from None
    if not isinstance(header, dict):
        raise WeightsFileError(path, "the file is damaged or incomplete (its header is not a table of tensors)")
    header.pop("__metadata__", None)
    if len(header) > MAX_TENSORS:
        raise WeightsFileError(path, f"the file is damaged or not a network's weights (its header lists "
                                     f"{len(header):,} tensors; a network has at most {MAX_TENSORS:,})")
    return header, 8 + n, size - 8 - n


def tensor_spans(f, path) -> tuple[dict, int, int]:
    """The tensors of the open safetensors file ``f`` as {name: (dtype, shape, start, end)} (byte offsets into its
    data section), the data section's offset in the file and its size. WeightsFileError names the file and, where
    one is at fault, the tensor: a header entry that does not parse, a dtype no network takes, a byte range that
    does not hold its shape, or one past the end of the file (a truncated download)."""
    from . import WeightsFileError

    header, start, size = _header(f, path)
    spans = {}
    for name, info in header.items():
        try:
            kind = info["dtype"]
            shape = [int(d) for d in info["shape"]]
            s, e = (int(v) for v in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as err:
            raise WeightsFileError(path, f"the file is damaged or incomplete (header entry {name!r}: {err!r})") \
                from None
        if kind not in SAFETENSORS_DTYPES:
            raise WeightsFileError(path, f"tensor {name} has dtype {kind}, which no network here takes")
        dtype = SAFETENSORS_DTYPES[kind]
        numel = 1
        for d in shape:
            numel *= d
        if e > size:
            raise WeightsFileError(path, f"the file is damaged or incomplete (tensor {name} ends at byte {e} of a "
                                         f"{size}-byte data section: the file is cut short)")
        if s < 0 or e - s != numel * dtype.itemsize:
            raise WeightsFileError(path, f"the file is damaged or incomplete (tensor {name}: bytes {s}..{e} do not "
                                         f"hold {kind} {shape})")
        spans[name] = (dtype, shape, s, e)
    return spans, start, size


def read_safetensors_to(path, device) -> dict:
    """The tensors of a .safetensors file on a CUDA `device`, read through pinned staging buffers into one device
    buffer (each tensor a view of it). WeightsFileError for a damaged or truncated file."""
    from . import WeightsFileError, check_readable

    check_readable(path)
    device = torch.device(device)
    with open(path, "rb", buffering=0) as f:
        spans, start, size = tensor_spans(f, path)
        data = torch.empty(size, dtype=torch.uint8, device=device)
        stream = side_stream(device)
        chunk = min(CHUNK_BYTES, max(size, 1))
        staging = [torch.empty(chunk, dtype=torch.uint8, pin_memory=True) for _ in range(2)]
        copied = [None, None]
        offset, i = 0, 0
        while offset < size:
            k = i % 2
            if copied[k] is not None:
                copied[k].synchronize()          # the buffer's last copy is done: it may be refilled
            m = min(chunk, size - offset)
            view = memoryview(staging[k].numpy())[:m]
            got = 0
            while got < m:
                n = f.readinto(view[got:])
                if not n:
                    raise WeightsFileError(path, "the file is damaged or incomplete (it ends early)")
                got += n
            with torch.cuda.stream(stream):
                data[offset:offset + m].copy_(staging[k][:m], non_blocking=True)
                copied[k] = torch.cuda.Event()
                copied[k].record(stream)
            offset += m
            i += 1
        stream.synchronize()
    tensors = {}
    for name, (dtype, shape, s, e) in spans.items():
        piece = data[s:e]
        if s % dtype.itemsize:                   # the format does not promise alignment: copy such a tensor
            piece = piece.clone()
        tensors[name] = piece.view(dtype).view(shape)
    return tensors
