"""lcx.metrics against hand-worked examples and independent formulas."""

import math

import pytest

from lcx.metrics import (
    exact_match,
    mean_ci,
    ndcg_at_k,
    normalize,
    parse_ranking,
    per_digit_accuracy,
    rouge,
    ruler_string_match,
    substring_exact_match,
    token_f1,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The Cat!", "cat"),
        ("  An apple,  a day. ", "apple day"),
        ("theory of the  atom", "theory of atom"),  # "the" inside "theory" stays
        ("U.S.A.", "usa"),
        ("rock-n-roll", "rocknroll"),  # punctuation is deleted, not turned into spaces
        ("A\tthe\nAn", ""),
    ],
)
def test_normalize_squad_examples(text, expected):
    assert normalize(text) == expected


def test_exact_match():
    assert exact_match("The Denver Broncos.", ["Broncos", "denver broncos"]) == 1.0
    assert exact_match("the Denver Broncos", "Denver Broncos") == 1.0  # a bare str answer
    assert exact_match("Denver", "Denver Broncos") == 0.0
    assert exact_match("Denver Broncos won", ["Denver Broncos"]) == 0.0


def test_substring_exact_match():
    assert substring_exact_match("I think it is the Denver Broncos!", "the denver broncos") == 1.0
    assert substring_exact_match("It was Carolina.", ["Denver", "Carolina Panthers"]) == 0.0
    assert substring_exact_match("Denver", "Denver Broncos") == 0.0  # answer longer than guess
    # HELMET's SubEM is a character substring test, so word boundaries are not respected.
    assert substring_exact_match("By comparison", "Paris") == 1.0


def test_ruler_string_match_is_the_fraction_found():
    pred = "The special magic numbers are 123 and 456."
    assert ruler_string_match(pred, ["123", "456", "789"]) == pytest.approx(2 / 3)
    assert ruler_string_match(pred, ["123"]) == 1.0
    assert ruler_string_match("APPLE pie", "apple") == 1.0  # case-insensitive, str answer
    assert ruler_string_match("nothing here", ["1", "2"]) == 0.0


@pytest.mark.parametrize(
    "prediction, expected",
    [
        ("12345", 1.0),
        ("The pass key is 12 345.", 1.0),  # non-digits are stripped first
        ("123", 3 / 5),  # short: the two missing digits are wrong
        ("1234599", 1.0),  # long: extra trailing digits are ignored
        ("54321", 1 / 5),  # garbled: only the middle 3 lines up
        ("x2345", 0.0),  # one digit dropped shifts every later digit
        ("no digits at all", 0.0),
    ],
)
def test_per_digit_accuracy(prediction, expected):
    assert per_digit_accuracy(prediction, "12345") == pytest.approx(expected)


def test_per_digit_accuracy_rejects_answer_without_digits():
    with pytest.raises(ValueError):
        per_digit_accuracy("123", "abc")


def test_token_f1_by_hand():
    # "the cat sat" -> [cat, sat]; "cat sat down" -> [cat, sat, down]: 2 shared tokens,
    # P = 2/2 = 1, R = 2/3, F1 = 2 * 1 * (2/3) / (1 + 2/3) = 0.8.
    assert token_f1("the cat sat", "cat sat down") == pytest.approx(0.8)
    assert token_f1("the cat sat", ["dog", "cat sat down"]) == pytest.approx(0.8)  # max
    # Repeats count once per match: 1 shared token, P = 1/3, R = 1, F1 = (2/3) / (4/3) = 0.5.
    assert token_f1("cat cat cat", "cat") == pytest.approx(0.5)
    assert token_f1("The Cat.", "cat") == 1.0
    assert token_f1("dog", "cat") == 0.0


def test_rouge_by_hand():
    # Unigrams: 5 of 6 shared each way (the, cat, on, the, mat) -> P = R = F = 5/6.
    # Bigrams: the-cat, on-the, the-mat shared, 3 of 5 each way -> 3/5.
    # LCS: "the cat on the mat", 5 tokens of 6 -> 5/6. One sentence, so rougeLsum = rougeL.
    r = rouge("the cat sat on the mat", "the cat lay on the mat")
    assert r["rouge1"] == pytest.approx(5 / 6)
    assert r["rouge2"] == pytest.approx(3 / 5)
    assert r["rougeL"] == pytest.approx(5 / 6)
    assert r["rougeLsum"] == pytest.approx(5 / 6)
    # Unequal lengths: P = 3/3, R = 3/6, F = 2 * 1 * 0.5 / 1.5 = 2/3.
    assert rouge("the cat sat", "the cat sat on the mat")["rouge1"] == pytest.approx(2 / 3)


def test_rouge_uses_the_porter_stemmer():
    assert rouge("running dogs", "run dog")["rouge1"] == pytest.approx(1.0)


REL = {1: 3, 2: 2, 3: 0, 4: 1}
# Ideal order 1, 2, 4: IDCG = 3/log2(2) + 2/log2(3) + 1/log2(4).
IDCG = 3 / 1 + 2 / math.log2(3) + 1 / 2


def test_ndcg_by_hand():
    # Ranking 2, 3, 1, 5, 4 (5 is unjudged, grade 0), linear gain:
    # DCG = 2/log2(2) + 0/log2(3) + 3/log2(4) + 0/log2(5) + 1/log2(6) = 2 + 1.5 + 0.38685 = 3.88685
    dcg = 2 / 1 + 0 / math.log2(3) + 3 / 2 + 0 / math.log2(5) + 1 / math.log2(6)
    assert ndcg_at_k([2, 3, 1, 5, 4], REL) == pytest.approx(dcg / IDCG)
    # IDCG = 3 + 1.26186 + 0.5 = 4.76186, so nDCG = 3.88685 / 4.76186 = 0.81625.
    assert ndcg_at_k([2, 3, 1, 5, 4], REL) == pytest.approx(0.81625, abs=1e-5)
    # The exponential gain (2**rel - 1) would give a different number for the same ranking.
    dcg_exp = 3 / 1 + 7 / 2 + 1 / math.log2(6)
    idcg_exp = 7 / 1 + 3 / math.log2(3) + 1 / 2
    assert ndcg_at_k([2, 3, 1, 5, 4], REL) != pytest.approx(dcg_exp / idcg_exp)


def test_ndcg_perfect_reversed_and_edge_cases():
    assert ndcg_at_k([1, 2, 4, 3], REL) == pytest.approx(1.0)
    assert ndcg_at_k([3, 4, 2, 1], REL) < 1.0
    assert ndcg_at_k([2, 1], REL, k=1) == pytest.approx(2 / 3)  # DCG@1 = 2, IDCG@1 = 3
    # A repeated id keeps only its first position: [2, 2, 1] scores as [2, 1].
    assert ndcg_at_k([2, 2, 1], REL) == pytest.approx((2 + 3 / math.log2(3)) / IDCG)
    # An unknown id still takes a rank: 1 lands at rank 2.
    assert ndcg_at_k([99, 1], REL) == pytest.approx((3 / math.log2(3)) / IDCG)
    assert ndcg_at_k([1, 2], {1: 0, 2: 0}) == 0.0
    assert ndcg_at_k([], REL) == 0.0
    assert ndcg_at_k(["b", "a"], {"a": 1}) == pytest.approx(1 / math.log2(3))  # string ids


@pytest.mark.parametrize(
    "text",
    [
        "[3] > [12] > [7]",
        "3 > 12 > 7",
        "ID: 3 > ID: 12 > ID: 7",
        "ID: 3 | ID: 12 | ID: 7",
        "ID3 > ID12 > ID7",
        "3, 12, 7",
        "Ranking: [3] > [12] > [7]. Passage 3 answers best.",  # the longest run wins
        "I read 20 passages. Ranking: 3 > 12 > 3 > 7",  # a repeat keeps its first place
    ],
)
def test_parse_ranking_formats(text):
    assert parse_ranking(text) == [3, 12, 7]


def test_parse_ranking_without_numbers():
    assert parse_ranking("I cannot rank these.") == []


# Newcombe (1998), Stat. Med. 17:857-872, Table I, method 3 (the score interval without
# continuity correction), 95%, printed to four digits.
NEWCOMBE_1998 = [
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0000, 0.1611),
    (1, 29, 0.0061, 0.1718),
]


@pytest.mark.parametrize("k, n, low, high", NEWCOMBE_1998)
def test_wilson_interval_matches_newcombe_1998(k, n, low, high):
    ci = mean_ci([1] * k + [0] * (n - k))
    assert ci["mean"] == pytest.approx(k / n) and ci["n"] == n
    assert (ci["low"], ci["high"]) == pytest.approx((low, high), abs=5e-5)


def test_wilson_bounds_are_exact_at_zero_and_one():
    """All-0 scores: the low end is exactly 0 (so a score of 0 is never outside its own interval);
    mirrored for all-1 scores. One failure still gives an interval (the t interval would not)."""
    zero, one = mean_ci([0] * 20), mean_ci([1.0] * 20)
    assert zero["low"] == 0.0 and zero["high"] == pytest.approx(0.1611, abs=5e-5)  # Newcombe
    assert one["high"] == 1.0 and one["low"] == pytest.approx(1 - 0.1611, abs=5e-5)
    single = mean_ci([0])
    assert (single["mean"], single["n"], single["low"]) == (0.0, 1, 0.0) and single["high"] < 1


def test_a_lower_confidence_gives_a_nested_narrower_interval():
    wide, narrow = mean_ci([1, 0, 0, 1, 0]), mean_ci([1, 0, 0, 1, 0], confidence=0.90)
    assert wide["low"] < narrow["low"] < 0.4 < narrow["high"] < wide["high"]
    wide, narrow = mean_ci([1.0, 2.0, 4.0, 7.0]), mean_ci([1.0, 2.0, 4.0, 7.0], confidence=0.9)
    assert wide["low"] < narrow["low"] < 3.5 < narrow["high"] < wide["high"]


def test_t_interval_matches_published_values():
    # Student (1908)'s sleep data (R's `sleep`), the paired differences of extra sleep: R's
    # t.test(extra ~ group, data = sleep, paired = TRUE) prints the interval -2.4598858 -0.7001142
    # for group 1 - group 2, so 0.7001142 to 2.4598858 around the mean difference 1.58.
    sleep = [1.2, 2.4, 1.3, 1.3, 0.0, 1.0, 1.8, 0.8, 4.6, 1.4]
    ci = mean_ci(sleep)
    assert (ci["mean"], ci["n"]) == (pytest.approx(1.58), 10)
    assert (ci["low"], ci["high"]) == pytest.approx((0.7001142, 2.4598858), abs=5e-8)
    # mean 3.5, sample sd sqrt(7); t(0.975, 3) = 3.182 in a printed t table: half-width 4.2099
    ci = mean_ci([1.0, 2.0, 4.0, 7.0])
    assert ci["high"] - 3.5 == pytest.approx(3.182 * math.sqrt(7) / 2, abs=1e-3)
    assert ci["high"] - 3.5 == pytest.approx(3.5 - ci["low"])


def test_mean_ci_degenerate_samples():
    ci = mean_ci([0.5])  # one non-binary value: no spread to estimate, no crash
    assert ci["mean"] == 0.5 and ci["n"] == 1
    assert math.isnan(ci["low"]) and math.isnan(ci["high"])
    ci = mean_ci([])
    assert ci["n"] == 0 and math.isnan(ci["mean"])
    ci = mean_ci([0.5, 0.5, 0.5])  # zero spread: a zero-width interval
    assert (ci["low"], ci["high"]) == (0.5, 0.5)
