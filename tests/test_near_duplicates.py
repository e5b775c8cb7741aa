"""Near-duplicate groups (MinHash + LSH, then exact Jaccard) against brute force: every pair's exact Jaccard and
a union-find over those at the threshold, on the shared identity conversations and on planted near-duplicates."""

import json
import random
from pathlib import Path

import pytest

from pipelines.data.near_duplicates import groups, jaccard, shingles, split_keeping_groups

IDENTITY = Path(__file__).resolve().parents[2] / "shared" / "data" / "chat" / "identity_conversations.json"


def brute_force_groups(texts: list[str], threshold: float) -> list[set[int]]:
    sets = [shingles(t) for t in texts]
    label = list(range(len(texts)))
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            if jaccard(sets[i], sets[j]) >= threshold:
                old, new = label[j], label[i]
                label = [new if x == old else x for x in label]
    return sorted((set(k for k, x in enumerate(label) if x == g) for g in set(label)), key=min)


def as_sets(group_of: list[int]) -> list[set[int]]:
    return sorted((set(i for i, x in enumerate(group_of) if x == g) for g in set(group_of)), key=min)


def identity_texts() -> list[str]:
    return [" ".join(t["value"] for t in r["conversations"]) for r in json.loads(IDENTITY.read_text())]


@pytest.mark.parametrize("threshold", [0.7, 0.8, 0.9])
def test_groups_equal_brute_force_on_the_identity_conversations(threshold):
    texts = identity_texts()[:200]
    assert as_sets(groups(texts, threshold)) == brute_force_groups(texts, threshold)


def test_planted_near_duplicates_are_found_and_nothing_else():
    rng = random.Random(3)
    words = [f"w{i}" for i in range(400)]
    texts = []
    for _ in range(40):  # 40 random texts of 60 words, each with a copy that has 2 words changed (J ~ 0.8-0.9)
        base = [rng.choice(words) for _ in range(60)]
        copy = list(base)
        for k in rng.sample(range(60), 2):
            copy[k] = rng.choice(words)
        texts += [" ".join(base), " ".join(copy)]
    want = brute_force_groups(texts, 0.75)
    assert as_sets(groups(texts, 0.75)) == want
    assert sum(len(g) == 2 for g in want) >= 35  # the planted pairs (random texts share almost nothing)


def test_shingles_ignore_case_and_punctuation():
    assert shingles("Who are YOU?!") == shingles("who are you") == frozenset({"who are you"})
    assert shingles("a b") == frozenset({"a b"})


def test_a_group_stays_on_one_side_and_validation_never_overflows():
    group_of = [0, 1, 1, 3, 0, 5, 6, 6, 6, 9]
    validation, train = split_keeping_groups(group_of, 4)
    assert sorted(validation + train) == list(range(10)) and len(validation) <= 4
    for g in set(group_of):
        members = {i for i, x in enumerate(group_of) if x == g}
        assert members <= set(validation) or members <= set(train)
    assert validation == [0, 1, 2, 4]  # in order: group 0 (2), group 1 (2); the rest no longer fits
