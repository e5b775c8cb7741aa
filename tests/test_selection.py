import pytest

from fora_core import FisherReport, ForaConfigError, select_layers


def test_fisher_takes_the_top_k_by_brute_force():
    scores = [0.3, 5.0, 0.1, 2.0, 2.0, 9.0]
    for k in range(1, 7):
        # brute force: every subset of size k maximising the score sum, ties to lower indices
        from itertools import combinations

        best = max(combinations(range(6), k), key=lambda s: (sum(scores[i] for i in s), [-i for i in s]))
        assert select_layers(scores, k) == sorted(best)


def test_report_fraction_and_strategies():
    report = FisherReport(scores=[1.0, 4.0, 3.0, 2.0], num_batches=1, tokens_seen=1, seconds=0,
                          peak_memory_bytes=0, peak_memory_kind="cpu-rss")
    assert report.ranking == [1, 2, 3, 0]
    assert select_layers(report, 0.5) == [1, 2]
    assert select_layers(report, 2, "first") == [0, 1]
    assert select_layers(report, 2, "last") == [2, 3]
    assert select_layers(report, 2, "all") == [0, 1, 2, 3]
    r1, r2 = select_layers(10, 4, "random", seed=1), select_layers(10, 4, "random", seed=1)
    assert r1 == r2 and len(set(r1)) == 4 and r1 == sorted(r1)


def test_bad_requests():
    with pytest.raises(ForaConfigError, match="strategy"):
        select_layers([1.0], 1, "greedy")
    with pytest.raises(ForaConfigError, match="1..3 layers"):
        select_layers([1.0, 2.0, 3.0], 4)
    with pytest.raises(ForaConfigError, match="needs Fisher scores"):
        select_layers(4, 2)
