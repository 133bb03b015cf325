"""Exact and near-duplicate removal for preference pairs.

Exact duplicates are pairs with the same normalised (prompt, chosen, rejected). Near duplicates are pairs
whose prompts have an estimated Jaccard similarity over character 5-gram shingles of at least ``threshold``,
found with MinHash LSH (datasketch). Character shingles [R] work for one-line prompts and for scripts
without spaces alike. Near-duplicate prompts form one cluster; the curated train/held-out split assigns
whole clusters, so the two splits share no prompt.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from cerm.train.curate.filters import FilterResult, Removal, normalise_text
from cerm.train.pairs import PreferencePair

SHINGLE_CHARS = 5


def drop_exact_duplicates(pairs: Sequence[PreferencePair]) -> FilterResult:
    """Keep the first of every group of pairs equal after normalisation."""
    seen: dict[str, str] = {}
    kept, removed = [], []
    for p in pairs:
        key = hashlib.sha256("\x00".join(normalise_text(t) for t in (p.prompt_text, p.chosen, p.rejected))
                             .encode("utf-8")).hexdigest()
        if key in seen:
            removed.append(Removal(p.id, "exact_duplicate", f"same pair as {seen[key]}"))
        else:
            seen[key] = p.id
            kept.append(p)
    return FilterResult(kept, removed)


def shingles(text: str, k: int = SHINGLE_CHARS) -> set[bytes]:
    """The ``k``-character shingles of the normalised text (the whole text if shorter)."""
    norm = normalise_text(text)
    if len(norm) <= k:
        return {norm.encode("utf-8")}
    return {norm[i:i + k].encode("utf-8") for i in range(len(norm) - k + 1)}


@dataclass(frozen=True)
class Clustering:
    """``cluster[pair_id]`` is the id of the first pair whose prompt started the near-duplicate cluster."""

    cluster: dict[str, str]
    result: FilterResult


def cluster_near_duplicates(pairs: Sequence[PreferencePair], *, threshold: float = 0.8, num_perm: int = 128,
                            max_pairs_per_prompt: int = 1, seed: int = 1) -> Clustering:
    """Group pairs by near-duplicate prompt and keep at most ``max_pairs_per_prompt`` per group.

    Candidates from LSH are confirmed with the MinHash Jaccard estimate, so a pair joins a cluster only if
    its prompt is estimated at least ``threshold`` similar to the cluster's first prompt.
    """
    from datasketch import MinHash, MinHashLSH

    if not 0 < threshold <= 1:
        raise ValueError(f"threshold ({threshold}) must be in (0, 1].")
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    hashes = MinHash.bulk([shingles(p.prompt_text) for p in pairs], num_perm=num_perm, seed=seed)
    heads: dict[str, MinHash] = {}
    order: dict[str, int] = {}
    cluster: dict[str, str] = {}
    size: dict[str, int] = {}
    kept, removed = [], []
    for p, mh in zip(pairs, hashes, strict=True):
        candidates = sorted(lsh.query(mh), key=order.__getitem__)  # the earliest cluster wins
        head = next((h for h in candidates if heads[h].jaccard(mh) >= threshold), None)
        if head is None:
            head = p.id
            heads[head] = mh
            order[head] = len(order)
            lsh.insert(head, mh)
        cluster[p.id] = head
        size[head] = size.get(head, 0) + 1
        if size[head] > max_pairs_per_prompt:
            removed.append(Removal(p.id, "near_duplicate", f"prompt near-duplicates that of {head}"))
        else:
            kept.append(p)
    return Clustering(cluster, FilterResult(kept, removed))
