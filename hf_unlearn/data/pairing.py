"""Pairing each forget row with a retain row, deterministically, so epochs, resume and sharding keep working.

`Trainer` builds its loop from one dataset and one sampler. Here the dataset is the forget set (an epoch is one pass
over it) and the sampler yields `(forget_index, retain_index)` pairs: the forget order is a fresh permutation every
epoch, and the retain rows come from a stream that cycles over the retain set with its own permutation per cycle.
Both depend only on `(seed, epoch, position)`, so a resumed run (which skips batches of the same sampler) sees
exactly the rows an uninterrupted run sees, and `accelerate` can shard the batches across processes. With
`retain_per_forget = r > 1` each forget row comes with the next r rows of the retain stream.

`ChunkedForgetRetainSampler` is the chunked sequential schedule (forget chunks unlearned one after another, several
passes each), built on the same principles.
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
        if isinstance(retain_index, tuple):  # several retain rows per forget row
            retain = [self.retain[i] for i in retain_index] if self.retain is not None else None
        else:
            retain = self.retain[retain_index] if self.retain is not None and retain_index >= 0 else None
        return {"forget": self.forget[forget_index], "retain": retain}


class ForgetRetainSampler(Sampler):
    """Yields `(forget_index, retain_index)`; `retain_index` is -1 when there is no retain set, and a tuple of
    `retain_per_forget` indices when that is above 1.

    Call `set_epoch` before iterating (the Trainer does, through accelerate's data loader).
    """

    def __init__(self, num_forget: int, num_retain: int, seed: int = 0, shuffle: bool = True,
                 retain_per_forget: int = 1):
        self.num_forget = num_forget
        self.num_retain = num_retain
        self.seed = seed
        self.shuffle = shuffle
        self.retain_per_forget = retain_per_forget
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

    def retain_indices(self, epoch: int) -> list[int] | list[tuple[int, ...]]:
        """The retain rows paired with positions `0..num_forget-1` of `epoch` (`retain_per_forget` each)."""
        if self.num_retain == 0:
            return [-1] * self.num_forget
        r = self.retain_per_forget
        start = epoch * self.num_forget * r
        out, cycle, perm = [], None, None
        for position in range(start, start + self.num_forget * r):
            if position // self.num_retain != cycle:
                cycle = position // self.num_retain
                perm = self._permutation(self.num_retain, 1, cycle)
            out.append(perm[position % self.num_retain])
        return out if r == 1 else [tuple(out[i * r : (i + 1) * r]) for i in range(self.num_forget)]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        forget = self._permutation(self.num_forget, 0, self.epoch)
        return iter(zip(forget, self.retain_indices(self.epoch)))


class ChunkedForgetRetainSampler(Sampler):
    """The chunked sequential schedule (AILS-NTUA's "data chunking"), for any method.

    The forget rows, in their order, are split into chunks of `chunk_size` (the last one may be smaller). Chunk `k` is
    paired with `retain_per_forget * len(chunk)` retain rows taken cyclically in the retain set's order, the retain
    position carried over from one chunk to the next. The chunks are unlearned one after another, each for
    `epochs_per_chunk` passes; every pass reshuffles the chunk's forget rows and its retain rows (seeded by `seed`,
    the Trainer epoch, the chunk and the pass). One Trainer epoch is the whole schedule.

    Yields `(forget_index, retain)`: `retain` is a retain index (-1 without a retain set) when `retain_per_forget` is
    1, else a tuple of `retain_per_forget` indices. Everything depends only on `(seed, epoch, position)`, so a resumed
    run sees exactly the rows an uninterrupted one sees.
    """

    def __init__(self, num_forget: int, num_retain: int, chunk_size: int, retain_per_forget: int = 1,
                 epochs_per_chunk: int = 1, seed: int = 0, shuffle: bool = True):
        self.num_forget, self.num_retain = num_forget, num_retain
        self.chunk_size, self.retain_per_forget, self.epochs_per_chunk = chunk_size, retain_per_forget, epochs_per_chunk
        self.seed, self.shuffle, self.epoch = seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def chunks(self) -> list[range]:
        """The forget indices of each chunk."""
        return [range(start, min(start + self.chunk_size, self.num_forget))
                for start in range(0, self.num_forget, self.chunk_size)]

    def chunk_lengths(self) -> list[int]:
        """Items the schedule yields for each chunk (its rows times `epochs_per_chunk`)."""
        return [len(chunk) * self.epochs_per_chunk for chunk in self.chunks()]

    def __len__(self) -> int:
        return self.num_forget * self.epochs_per_chunk

    def _permutation(self, n: int, *key: int) -> list[int]:
        if not self.shuffle:
            return list(range(n))
        seed = self.seed
        for part in (self.epoch, *key):
            seed = seed * 1_000_003 + part
        return torch.randperm(n, generator=torch.Generator().manual_seed(seed % 2**63)).tolist()

    def retain_block(self, chunk: range) -> list[int]:
        """The retain rows of `chunk`: the next `retain_per_forget * len(chunk)` rows of the cycle over the retain set
        (every earlier chunk took as many per forget row, so the position is `retain_per_forget * chunk.start`)."""
        r = self.retain_per_forget
        return [(r * chunk.start + i) % self.num_retain for i in range(r * len(chunk))]

    def __iter__(self) -> Iterator[tuple[int, int | tuple[int, ...]]]:
        r = self.retain_per_forget
        for k, chunk in enumerate(self.chunks()):
            block = self.retain_block(chunk) if self.num_retain else []
            for e in range(self.epochs_per_chunk):
                forget = self._permutation(len(chunk), k, e, 0)
                order = self._permutation(len(block), k, e, 1) if block else []
                for j, f in enumerate(forget):
                    if not block:
                        yield chunk[f], -1
                        continue
                    picked = tuple(block[i] for i in order[j * r : (j + 1) * r])
                    yield chunk[f], picked[0] if r == 1 else picked
