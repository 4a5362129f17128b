"""Sorting int64 keys for the O-Voxel export's mesh passes, on the keys' device. Each function is PyTorch
(``*_torch``, what runs on a GPU), with numpy's sort standing in for CPU tensors (several times faster than torch's
there); both give the same arrays.

On the CPU, a key's sorting order comes from one ``np.sort`` of the keys shifted left with each one's index in the
low bits (a sort of plain integers, faster than ``np.argsort``; ``np.unique`` without return flags hashes, slower
still): ties come out in index order, as a stable sort gives them. Keys whose span and index need more than 63 bits
take ``np.argsort(kind="stable")``. Every sort is numpy's stable one (timsort): a mesh's keys come in long sorted
runs (its generator's order), where it is several times faster than the default quicksort, and on shuffled keys
about as fast."""
from __future__ import annotations

import numpy as np
import torch

from ..key_order import sorted_and_order

__all__ = ["unique_inverse", "unique_counts", "first_of_each", "count_distinct", "distinct_counts", "stable_order",
           "unique_inverse_torch", "unique_counts_torch", "first_of_each_torch", "count_distinct_torch",
           "distinct_counts_torch"]


def unique_inverse_torch(key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sorted distinct values, index of each key among them) of int64 ``key``."""
    return torch.unique(key, return_inverse=True)


def unique_counts_torch(key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(index of each key among the sorted distinct values, how many keys each distinct value has)."""
    _, inverse, counts = torch.unique(key, return_inverse=True, return_counts=True)
    return inverse, counts


def first_of_each_torch(key: torch.Tensor) -> torch.Tensor:
    """Ascending indices of the first occurrence of each distinct value of int64 ``key``."""
    sk, order = torch.sort(key, stable=True)
    start = torch.ones_like(sk, dtype=torch.bool)
    start[1:] = sk[1:] != sk[:-1]
    return torch.sort(order[start]).values


def count_distinct_torch(key: torch.Tensor) -> int:
    """How many distinct values int64 ``key`` holds."""
    if key.numel() == 0:
        return 0
    sk = torch.sort(key).values
    return int((sk[1:] != sk[:-1]).sum()) + 1


def distinct_counts_torch(key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sorted distinct values, how many keys each has) of int64 ``key``: no inverse, one sort."""
    return torch.unique(key, return_counts=True)


def stable_order(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(``k`` sorted, the stable order that sorts it) of an int64 numpy array (see the module docstring)."""
    return sorted_and_order(k, kind="stable")


def _starts(sk: np.ndarray) -> np.ndarray:
    start = np.empty(len(sk), dtype=bool)
    start[:1] = True
    np.not_equal(sk[1:], sk[:-1], out=start[1:])
    return start


def _cpu_int64(key: torch.Tensor) -> bool:
    return key.device.type == "cpu" and key.dtype == torch.int64


def unique_inverse(key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``unique_inverse_torch``."""
    if key.device.type != "cpu":
        return unique_inverse_torch(key)
    if not _cpu_int64(key):
        uniq, inverse = np.unique(key.numpy(), return_inverse=True)
        return torch.from_numpy(uniq), torch.from_numpy(inverse.reshape(-1))
    sk, order = stable_order(key.reshape(-1).numpy())
    start = _starts(sk)
    inverse = np.empty(len(sk), dtype=np.int64)
    inverse[order] = np.cumsum(start) - 1
    return torch.from_numpy(sk[start]), torch.from_numpy(inverse)


def unique_counts(key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``unique_counts_torch``."""
    if key.device.type != "cpu":
        return unique_counts_torch(key)
    if not _cpu_int64(key):
        _, inverse, counts = np.unique(key.numpy(), return_inverse=True, return_counts=True)
        return torch.from_numpy(inverse.reshape(-1)), torch.from_numpy(counts)
    sk, order = stable_order(key.reshape(-1).numpy())
    start = _starts(sk)
    inverse = np.empty(len(sk), dtype=np.int64)
    inverse[order] = np.cumsum(start) - 1
    return torch.from_numpy(inverse), torch.from_numpy(np.diff(np.append(np.flatnonzero(start), len(sk))))


def first_of_each(key: torch.Tensor) -> torch.Tensor:
    """``first_of_each_torch``."""
    if key.device.type != "cpu":
        return first_of_each_torch(key)
    k = key.numpy().astype(np.int64, copy=False)
    sk, order = stable_order(k)
    first = order[_starts(sk)]
    first.sort(kind="stable")
    return torch.from_numpy(first)


def count_distinct(key: torch.Tensor) -> int:
    """``count_distinct_torch``."""
    if key.device.type != "cpu":
        return count_distinct_torch(key)
    if key.numel() == 0:
        return 0
    sk = np.sort(key.numpy(), kind="stable")
    return int((sk[1:] != sk[:-1]).sum()) + 1


def distinct_counts(key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``distinct_counts_torch``."""
    if key.device.type != "cpu":
        return distinct_counts_torch(key)
    sk = np.sort(key.reshape(-1).numpy(), kind="stable")
    if len(sk) == 0:
        return torch.from_numpy(sk), torch.zeros(0, dtype=torch.int64)
    start = _starts(sk)
    return torch.from_numpy(sk[start]), torch.from_numpy(np.diff(np.append(np.flatnonzero(start), len(sk))))
