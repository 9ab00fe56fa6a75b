"""Training batches: windows cut from each user's whole training history, padded per batch.

T4R's merlin loader feeds ``DATA_DIR/train/`` as it is: one example per sequence, the most
recent ``max_seq_length`` items, every batch padded to ``max_seq_length``. On real data that
wastes both signal and time:

* a history longer than the window teaches only its last window. Here a history is cut into
  windows ``train.window_stride`` items apart (the BERT4Rec reference's sliding windows), so
  every training interaction is seen;
* each window appears ``train.copies_per_epoch`` times an epoch, each copy masked afresh
  (the reference's ``dupe_factor``): more masked targets per pass over the data;
* a batch is padded to its own longest window, not to ``max_seq_length``: most sessions are
  far shorter than the window, and attention costs grow with the square of the padding;
* batches hold windows of similar length (``train.length_buckets``): each epoch's shuffled
  order is cut into runs of that many batches, each run sorted by length and cut into
  batches, and the batches shuffled again. Where lengths are long-tailed (a median of 6 items and a window of 50), a
  random batch almost always holds one long window and pads every other to it; validation
  runs through its rows shortest first for the same reason.

The Trainer takes this loader through its ``train_dataloader`` argument, and the same kind
of loader over ``DATA_DIR/valid/`` (in order, padded per batch) through ``eval_dataloader``.
With several ranks, each trains on its share of every epoch's windows and validates on the
whole validation set, so every rank computes the same metrics and takes the same early
stopping decision.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from t4r_app.data.item_sequences import ItemSequences
from workflow.columns import ITEM_LIST, PADDING_ID
from workflow.list_columns import gather_slices
from workflow.splits import MIN_EXAMPLE_LENGTH


def window_bounds(lengths: np.ndarray, window: int, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, start, stop) of every window: the most recent one, then one every ``stride`` items back.

    ``stride`` 0 keeps only the most recent window of each row. The oldest window starts at
    the row's first item, so no item is left out whatever the stride.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if stride <= 0:
        counts = np.ones(len(lengths), dtype=np.int64)
    else:
        counts = 1 + np.maximum(0, -(-(lengths - window) // stride))
    rows = np.repeat(np.arange(len(lengths)), counts)
    back = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    stop = np.maximum(lengths[rows] - back * max(stride, 0), np.minimum(lengths[rows], window))
    start = np.maximum(stop - window, 0)
    keep = stop - start >= MIN_EXAMPLE_LENGTH
    return rows[keep], start[keep], stop[keep]


def cut_windows(histories: ItemSequences, window: int, stride: int) -> ItemSequences:
    rows, start, stop = window_bounds(histories.lengths, window, stride)
    values, offsets = gather_slices(histories.values, histories.offsets[:-1][rows], start, stop)
    return ItemSequences(values, offsets)


class WindowDataset(Dataset):
    """Every window ``copies`` times; item i is a window as an int64 tensor."""

    def __init__(self, windows: ItemSequences, copies: int = 1):
        self.windows = windows
        self.copies = copies

    def __len__(self) -> int:
        return len(self.windows) * self.copies

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(self.windows.row(index % len(self.windows)))

    def lengths(self) -> np.ndarray:
        """Every item's length, in index order."""
        return np.tile(self.windows.lengths, self.copies)


def pad_batch(windows: list[torch.Tensor]) -> tuple[dict[str, torch.Tensor], None]:
    """Right-pad to the longest window of the batch; (inputs, targets) as the Trainer expects."""
    longest = max(len(items) for items in windows)
    batch = torch.full((len(windows), longest), PADDING_ID, dtype=torch.long)
    for row, items in enumerate(windows):
        batch[row, : len(items)] = items
    return {ITEM_LIST: batch}, None


class EpochShuffle(Sampler):
    """A new order every pass, decided by (seed, pass number) alone; this rank's share of it.

    With ``lengths``, ``batch_size`` and ``buckets``, the share is grouped into batches of similar
    length, ``buckets`` batches sorted at a time (the module doc), whose order is shuffled; a
    short last batch stays last, so that every other batch the loader cuts is one of these groups.

    On ``--resume`` the Trainer replays the finished epochs by iterating the loader once per
    epoch; with the order a pure function of the pass number, the resumed run then sees
    exactly the batches the uninterrupted run saw, and the global RNG (which the masking
    draws from, and which checkpoints restore) is never touched by the shuffle.

    With ``world`` ranks every rank draws the same order and takes every ``world``-th item
    from ``rank`` on, so each window goes to one rank per pass. Data-parallel steps need the
    same number of batches on every rank: the order is wrapped around to a multiple of
    ``world`` first, which repeats at most ``world - 1`` windows per pass.
    """

    def __init__(
        self,
        size: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        lengths: np.ndarray | None = None,
        batch_size: int = 0,
        buckets: int = 0,
    ):
        self.size = size
        self.seed = seed
        self.rank = rank
        self.world = world
        self.lengths = None if lengths is None else torch.as_tensor(lengths)
        self.batch_size = batch_size
        self.buckets = buckets
        self.passes = 0

    def __len__(self) -> int:
        return -(-self.size // self.world)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.passes)
        self.passes += 1
        order = torch.randperm(self.size, generator=generator)
        if self.world > 1:
            order = torch.cat([order, order[: len(self) * self.world - self.size]])[self.rank :: self.world]
        if self.lengths is not None and self.batch_size and self.buckets:
            order = self._similar_lengths_together(order, generator)
        return iter(order.tolist())

    def _similar_lengths_together(self, order: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        run = self.batch_size * self.buckets
        sorted_runs = [part[torch.argsort(self.lengths[part], stable=True)] for part in torch.split(order, run)]
        batches = list(torch.split(torch.cat(sorted_runs), self.batch_size))
        short = batches.pop() if len(batches[-1]) < self.batch_size else None
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        return torch.cat(batches + ([short] if short is not None else []))


class WindowLoader(DataLoader):
    """A DataLoader with the ``_batch_size`` attribute T4R's Trainer reads; shuffled in batches of similar
    length, or (validation) every row once, shortest first."""

    def __init__(
        self,
        dataset: WindowDataset,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        shuffle: bool = True,
        length_buckets: int = 0,
    ):
        lengths = dataset.lengths()
        if shuffle:
            sampler = EpochShuffle(len(dataset), seed, rank, world, lengths, batch_size, length_buckets)
        else:  # in order of length: the same rows, padded far less
            sampler = np.argsort(lengths, kind="stable").tolist()
        # Its own generator, so that even the loader's base seed leaves the global RNG alone.
        super().__init__(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=pad_batch,
            generator=torch.Generator().manual_seed(seed),
        )
        self._batch_size = batch_size

