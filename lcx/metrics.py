"""Scoring functions for the long-context probe suite, each matching the benchmark it comes from.

Answer matching (answers may be one string or a list; a prediction scores its best answer):

- ``normalize``: SQuAD's ``normalize_answer`` (Rajpurkar et al., 2016), reused by KILT and HELMET:
  lowercase, drop punctuation, drop the articles a/an/the, collapse whitespace.
- ``exact_match``: SQuAD EM, normalized prediction equals a normalized answer.
- ``substring_exact_match``: HELMET's SubEM (Yen et al., 2024), a normalized answer occurs inside
  the normalized prediction; used for its RAG and recall tasks, where models add words around
  the answer.
- ``ruler_string_match``: RULER's ``string_match_all`` (Hsieh et al., 2024), the fraction of the
  answers found, case-insensitively, in the raw prediction (multi-key/multi-value NIAH,
  variable tracking, common/frequent words). RULER reports it x100; here it is a fraction.
- ``per_digit_accuracy``: passkey retrieval scored digit by digit (as ``lcx.evaluate`` does for
  teacher-forced passkeys), so a near miss scores above chance (0.1 per digit).
- ``token_f1``: SQuAD token F1 on normalized whitespace tokens (HELMET's NarrativeQA/InfBench QA,
  Llama 2 Long's QA tasks).
- ``rouge``: ROUGE-1/2/L F-measures from Google's ``rouge_score`` package with the Porter stemmer
  (HELMET's summarization, Llama 2 Long's QMSum/SummScreen); ``rougeLsum`` splits on newlines.

Re-ranking (HELMET's MS MARCO re-rank task):

- ``parse_ranking``: reads HELMET's requested "Ranking: ID3 > ID1 > ID2" and the variants
  "[3] > [1]", "ID: 3 > ID: 1", "3 > 1", or the same joined by "," or "|", taking the longest
  such run as HELMET's ``parse_rankings`` does.
- ``ndcg_at_k``: nDCG@k exactly as trec_eval's ``ndcg_cut_k`` (what pytrec_eval's
  ``ndcg_cut_10`` calls): linear gain, DCG = sum_i rel_i / log2(i + 2) over the top k (i from 0),
  divided by the DCG of the judged grades sorted best first. Grades <= 0 count as non-relevant.

Uncertainty: ``mean_ci`` gives a mean with a Wilson score interval (Wilson, 1927) when every value
is 0 or 1, which stays inside [0, 1] and is sane at small n and at 0% or 100%, and a Student-t
interval otherwise; both from ``scipy.stats``.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from functools import lru_cache

import numpy as np
from scipy import stats

_PUNCT = set(string.punctuation)


def _as_list(answers: str | Iterable[str]) -> list[str]:
    return [answers] if isinstance(answers, str) else list(answers)


def normalize(text: str) -> str:
    """SQuAD's normalize_answer: lowercase, no punctuation, no a/an/the, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, answers: str | Iterable[str]) -> float:
    """1.0 if the normalized prediction equals any normalized answer."""
    pred = normalize(prediction)
    return float(any(pred == normalize(a) for a in _as_list(answers)))


def substring_exact_match(prediction: str, answers: str | Iterable[str]) -> float:
    """HELMET's SubEM: 1.0 if any normalized answer is a substring of the normalized prediction."""
    pred = normalize(prediction)
    return float(any(normalize(a) in pred for a in _as_list(answers)))


def ruler_string_match(prediction: str, answers: str | Iterable[str]) -> float:
    """RULER's string_match_all: the fraction of answers found (case-insensitive) in prediction."""
    answers = _as_list(answers)
    pred = prediction.lower()
    return sum(a.lower() in pred for a in answers) / len(answers)


def per_digit_accuracy(prediction: str, answer: str) -> float:
    """Fraction of the answer's digits matched, index by index, by the prediction's digits.

    Non-digits are dropped from both before comparing; missing digits count as wrong and extra
    trailing digits in the prediction are ignored.
    """
    want = re.sub(r"\D", "", answer)
    if not want:
        raise ValueError(f"answer has no digits: {answer!r}")
    got = re.sub(r"\D", "", prediction)
    return sum(g == w for g, w in zip(got, want, strict=False)) / len(want)


def _f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, answers: str | Iterable[str]) -> float:
    """SQuAD token F1 on normalized whitespace tokens, the best over the answers."""
    pred = normalize(prediction).split()
    return max(_f1(pred, normalize(a).split()) for a in _as_list(answers))


ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer  # imported here: it pulls in nltk

    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def rouge(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE F-measures (rouge1, rouge2, rougeL, rougeLsum) of prediction against reference."""
    scores = _rouge_scorer().score(target=reference, prediction=prediction)
    return {k: scores[k].fmeasure for k in ROUGE_TYPES}


def parse_ranking(text: str) -> list[int]:
    """Document ids from a re-rank answer, best first, each once (its first mention).

    Brackets and "ID"/"ID:" prefixes are dropped, then the longest run of integers joined by
    ">", "," or "|" is taken, so stray numbers in surrounding prose are ignored. No run: [].
    """
    text = re.sub(r"[\[\]]|\bid\s*:?", " ", text, flags=re.IGNORECASE)
    runs = [m.group(0) for m in re.finditer(r"\d+(?:\s*[>,|]\s*\d+)*", text)]
    if not runs:
        return []
    ids = [int(x) for x in re.findall(r"\d+", max(runs, key=lambda r: len(re.findall(r"\d+", r))))]
    return list(dict.fromkeys(ids))


def ndcg_at_k(
    ranked_ids: Sequence[Hashable], relevance: dict[Hashable, float], k: int = 10
) -> float:
    """nDCG@k as trec_eval's ndcg_cut_k: linear gain rel / log2(rank + 1), rank from 1.

    Repeated ids keep only their first position; ids missing from ``relevance`` have grade 0.
    The ideal ranking is the judged grades sorted best first. 0.0 if nothing is relevant.
    """
    ranked = list(dict.fromkeys(ranked_ids))[:k]
    dcg = sum(max(relevance.get(d, 0), 0) / math.log2(i + 2) for i, d in enumerate(ranked))
    ideal = sorted((g for g in relevance.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean with a confidence interval from ``scipy.stats``: Wilson's score interval
    (``binomtest(k, n).proportion_ci(method="wilson")``) if all values are 0/1, else Student's t
    (``t.interval`` around the mean with the standard error of the mean).

    Returns {"mean", "low", "high", "n"}. With n = 1 the t interval is nan (no spread to
    estimate) while Wilson still gives a (wide) interval; with n = 0 everything is nan; values
    with no spread give a zero-width interval.
    """
    x = np.asarray(list(values), dtype=float)
    n = len(x)
    if n == 0:
        return {"mean": math.nan, "low": math.nan, "high": math.nan, "n": 0}
    mean = float(x.mean())
    if np.isin(x, (0.0, 1.0)).all():
        ci = stats.binomtest(int(x.sum()), n).proportion_ci(confidence, method="wilson")
        return {"mean": mean, "low": float(ci.low), "high": float(ci.high), "n": n}
    if n == 1:
        return {"mean": mean, "low": math.nan, "high": math.nan, "n": 1}
    sem = stats.sem(x)
    if sem == 0:  # scipy wants a positive scale
        return {"mean": mean, "low": mean, "high": mean, "n": n}
    low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=sem)
    return {"mean": mean, "low": float(low), "high": float(high), "n": n}
