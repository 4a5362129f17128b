"""Sorting int64 keys for the O-Voxel export's mesh passes, on the keys' device. Each function is PyTorch
(``*_torch``, what runs on a GPU), with numpy's sort standing in for CPU tensors (several times faster than torch's
there: a radix sort for integers); both give the same arrays."""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["unique_inverse", "unique_counts", "first_of_each", "count_distinct", "unique_inverse_torch",
           "unique_counts_torch", "first_of_each_torch", "count_distinct_torch"]


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


def unique_inverse(key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``unique_inverse_torch``."""
    if key.device.type != "cpu":
        return unique_inverse_torch(key)
    uniq, inverse = np.unique(key.numpy(), return_inverse=True)
    return torch.from_numpy(uniq), torch.from_numpy(inverse.reshape(-1))


def unique_counts(key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``unique_counts_torch``."""
    if key.device.type != "cpu":
        return unique_counts_torch(key)
    _, inverse, counts = np.unique(key.numpy(), return_inverse=True, return_counts=True)
    return torch.from_numpy(inverse.reshape(-1)), torch.from_numpy(counts)


def first_of_each(key: torch.Tensor) -> torch.Tensor:
    """``first_of_each_torch``."""
    if key.device.type != "cpu":
        return first_of_each_torch(key)
    k = key.numpy()
    order = np.argsort(k, kind="stable")
    sk = k[order]
    start = np.ones(len(sk), dtype=bool)
    start[1:] = sk[1:] != sk[:-1]
    return torch.from_numpy(np.sort(order[start]))


def count_distinct(key: torch.Tensor) -> int:
    """``count_distinct_torch``."""
    if key.device.type != "cpu":
        return count_distinct_torch(key)
    if key.numel() == 0:
        return 0
    sk = np.sort(key.numpy())
    return int((sk[1:] != sk[:-1]).sum()) + 1
