"""The RL pair stream: preference pairs (read by ``cerm.train.pairs``) in a resumable, seeded order.

The order is a pure function of (seed, epoch), so a run's data position is just the number of pairs
consumed: resuming at step s replays nothing and skips nothing.
"""

from __future__ import annotations

import random
from pathlib import Path

from cerm.train.pairs import PreferencePair, load_pairs


def read_pairs(path: str | Path) -> list[PreferencePair]:
    """Every pair of a file; the first bad row raises ValueError naming file, line and field."""
    pairs = load_pairs(path, strict=True).pairs
    if not pairs:
        raise ValueError(f"{path}: no preference pairs found; expected rows with prompt/chosen/rejected.")
    return pairs


class PairStream:
    """Endless pairs in a fresh seeded permutation per epoch. ``take(start, n)`` is pure."""

    def __init__(self, pairs: list[PreferencePair], seed: int) -> None:
        self.pairs = pairs
        self.seed = seed
        self._orders: dict[int, list[int]] = {}

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            order = list(range(len(self.pairs)))
            random.Random(f"{self.seed}:{epoch}").shuffle(order)
            self._orders = {epoch: order}  # only the current epoch is needed again
        return self._orders[epoch]

    def take(self, start: int, n: int) -> list[PreferencePair]:
        """Pairs at stream positions ``start .. start + n - 1``."""
        size = len(self.pairs)
        return [self.pairs[self._order(pos // size)[pos % size]] for pos in range(start, start + n)]

    def take_shard(self, start: int, updates: int, per_update: int, rank: int, world: int) -> list[PreferencePair]:
        """Process ``rank``'s pairs of the step at ``start``: its slice of every update's pairs, in update order.

        Update ``u`` of the step trains stream positions ``start + u * per_update * world`` onwards, however
        many processes share it, so a step's mini-batches hold the same pairs at any world size (our rule [R]).
        """
        return [p for u in range(updates)
                for p in self.take(start + (u * world + rank) * per_update, per_update)]


def split_holdout(pairs: list[PreferencePair], n: int, seed: int) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(train, held-out) with ``n`` pairs held out at random; refuses a holdout that leaves nothing to train on."""
    if n >= len(pairs):
        raise ValueError(f"eval_holdout ({n}) must be smaller than the number of training pairs ({len(pairs)}).")
    order = list(range(len(pairs)))
    random.Random(f"holdout:{seed}").shuffle(order)
    held = set(order[:n])
    return [p for i, p in enumerate(pairs) if i not in held], [p for i, p in enumerate(pairs) if i in held]
