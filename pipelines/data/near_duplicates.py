"""Near-duplicate records, found before the train/validation split so that a group lands on one side only.

Two records are near-duplicates when the Jaccard similarity of their word 3-gram sets (lower-cased, punctuation
dropped) reaches ``threshold``: J(A, B) = |A ∩ B| / |A ∪ B|. Groups are the connected components of that
relation. Templated chat data is full of them: of the 500 identity conversations in the tests' shared data,
every one has a neighbour at J >= 0.6 and 225 at J >= 0.8; a validation split drawn at random from such data
measures recall of the training set, not generalisation.

Candidates come from MinHash with locality-sensitive hashing (Broder 1997; Leskovec, Rajaraman & Ullman,
*Mining of Massive Datasets*, ch. 3): each set gets ``BANDS x ROWS`` min-hashes h_k(S) = min_{x in S}
(a_k x + b_k) mod p, and two sets whose signatures agree on all ROWS rows of some band are compared exactly. A
pair at similarity J becomes a candidate with probability 1 - (1 - J^ROWS)^BANDS: 0.9998 at J = 0.8 and 0.9
at J = 0.55 with 16 bands of 4. Every candidate's J is then computed exactly, so no pair below the threshold
is grouped.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

BANDS, ROWS = 16, 4
PRIME = (1 << 31) - 1
SHINGLE = 3


def shingles(text: str, n: int = SHINGLE) -> frozenset[str]:
    """The set of word n-grams of ``text`` (lower-cased; letters and digits only); a shorter text is one shingle."""
    words = re.sub(r"[^\w]+", " ", text.lower()).split()
    return frozenset(" ".join(words[i : i + n]) for i in range(max(1, len(words) - n + 1)))


def jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def signatures(sets: Sequence[frozenset[str]], seed: int = 0) -> np.ndarray:
    """(n, BANDS * ROWS) min-hashes: h_k(S) = min_{x in S} (a_k x + b_k) mod p, x a shingle's 31-bit hash."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, PRIME, size=BANDS * ROWS, dtype=np.uint64)
    b = rng.integers(0, PRIME, size=BANDS * ROWS, dtype=np.uint64)
    out = np.empty((len(sets), BANDS * ROWS), dtype=np.uint64)
    for i, s in enumerate(sets):
        x = np.array([int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little") % PRIME
                      for t in s] or [0], dtype=np.uint64)
        out[i] = ((a[:, None] * x[None, :] + b[:, None]) % PRIME).min(axis=1)  # < 2^62: no overflow
    return out


def candidate_pairs(sigs: np.ndarray) -> set[tuple[int, int]]:
    """Pairs (i < j) whose signatures agree on every row of at least one band."""
    pairs: set[tuple[int, int]] = set()
    for band in range(BANDS):
        buckets: dict[bytes, list[int]] = defaultdict(list)
        for i, row in enumerate(sigs[:, band * ROWS : (band + 1) * ROWS]):
            buckets[row.tobytes()].append(i)
        for members in buckets.values():
            pairs.update((m, n) for k, m in enumerate(members) for n in members[k + 1 :])
    return pairs


def groups(texts: Sequence[str], threshold: float, seed: int = 0) -> list[int]:
    """A group id per text (the smallest index of its group): texts at J >= ``threshold`` share one."""
    sets = [shingles(t) for t in texts]
    parent = list(range(len(sets)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in candidate_pairs(signatures(sets, seed)):
        if jaccard(sets[i], sets[j]) >= threshold:
            ri, rj = root(i), root(j)
            parent[max(ri, rj)] = min(ri, rj)
    return [root(i) for i in range(len(sets))]


def split_keeping_groups(group_of: Sequence[int], n_validation: int) -> tuple[list[int], list[int]]:
    """(validation indices, train indices): records in order, each group whole on one side; a group joins the
    validation split while it fits in ``n_validation``, else the training split."""
    size: dict[int, int] = defaultdict(int)
    for g in group_of:
        size[g] += 1
    side: dict[int, str] = {}
    taken = 0
    for g in group_of:
        if g not in side:
            fits = taken + size[g] <= n_validation
            side[g] = "validation" if fits else "train"
            taken += size[g] if fits else 0
    validation = [i for i, g in enumerate(group_of) if side[g] == "validation"]
    return validation, [i for i, g in enumerate(group_of) if side[g] == "train"]
