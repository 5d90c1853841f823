"""Pairing each forget row with a retain row, deterministically, so epochs, resume and sharding keep working.

`Trainer` builds its loop from one dataset and one sampler. Here the dataset is the forget set (an epoch is one pass
over it) and the sampler yields `(forget_index, retain_index)` pairs: the forget order is a fresh permutation every
epoch, and the retain rows come from a stream that cycles over the retain set with its own permutation per cycle.
Both depend only on `(seed, epoch, position)`, so a resumed run (which skips batches of the same sampler) sees
exactly the rows an uninterrupted run sees, and `accelerate` can shard the batches across processes.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, Sampler


class ForgetRetainDataset(Dataset):
    """Items `{"forget": features, "retain": features | None}` addressed by `(forget_index, retain_index)` pairs."""

    def __init__(self, forget: list[dict], retain: list[dict] | None):
        self.forget = forget
        self.retain = retain

    def __len__(self) -> int:
        return len(self.forget)

    def __getitem__(self, index) -> dict:
        if isinstance(index, int):  # plain integer access: forget row only
            return {"forget": self.forget[index], "retain": None}
        forget_index, retain_index = index
        retain = self.retain[retain_index] if self.retain is not None and retain_index >= 0 else None
        return {"forget": self.forget[forget_index], "retain": retain}


class ForgetRetainSampler(Sampler):
    """Yields `(forget_index, retain_index)`; `retain_index` is -1 when there is no retain set.

    Call `set_epoch` before iterating (the Trainer does, through accelerate's data loader).
    """

    def __init__(self, num_forget: int, num_retain: int, seed: int = 0, shuffle: bool = True):
        self.num_forget = num_forget
        self.num_retain = num_retain
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_forget

    def _permutation(self, n: int, stream: int, index: int) -> list[int]:
        if not self.shuffle:
            return list(range(n))
        # Distinct seeds for the forget stream (0) and the retain stream (1) of the same run.
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + stream * 7_919 + index)
        return torch.randperm(n, generator=generator).tolist()

    def retain_indices(self, epoch: int) -> list[int]:
        """The retain rows paired with positions `0..num_forget-1` of `epoch`."""
        if self.num_retain == 0:
            return [-1] * self.num_forget
        start = epoch * self.num_forget
        out, cycle, perm = [], None, None
        for position in range(start, start + self.num_forget):
            if position // self.num_retain != cycle:
                cycle = position // self.num_retain
                perm = self._permutation(self.num_retain, 1, cycle)
            out.append(perm[position % self.num_retain])
        return out

    def __iter__(self) -> Iterator[tuple[int, int]]:
        forget = self._permutation(self.num_forget, 0, self.epoch)
        return iter(zip(forget, self.retain_indices(self.epoch)))
