"""Long-context probe tasks, generated offline at any length in tokens.

Every task the four papers evaluate, built from the local corpus (or seeded synthetic facts put into
real text), deterministic per seed, at a requested length in tokens for the model's tokenizer:

=================  ============  ==========================================================
task               category      from
=================  ============  ==========================================================
``passkey``        recall        PI §3.3, Llama 2 Long footnote 4: digits in repeated filler
``needle``         recall        Llama-3 80K Fig. 1 / RULER: a magic number in real text
``first_sentence`` recall        Llama 2 Long §4.1 Fig. 5b: FIRST-SENTENCE-RETRIEVAL
``json_kv``        recall        HELMET JSON KV: one key's value from a JSON object
``topic``          recall        Llama-3 80K Fig. 2 (LongChat topics): the first topic
``multidoc_qa``    rag           Together multi-doc QA / HELMET RAG: one gold document of k
``rerank``         rerank        HELMET re-rank: order passages by relevance, nDCG@10
``icl``            icl           HELMET ICL: many-shot classification, abstract numeric labels
``doc_qa``         qa            Together / HELMET long-document QA, token F1
``summary``        summ          Together BookSum / HELMET summarization, ROUGE (see below)
=================  ============  ==========================================================

Every generator has the signature ``(tokenizer, length, depth, seed, split, pool) -> Example``:
``depth`` in [0, 1] places the answer (needle depth, gold-document position) where the task has one
and is ignored otherwise; ``split`` ("train" or "test") selects disjoint seed ranges, and ``pool`` is
a :class:`Pool` of documents (token ids) to draw real text from: the held-out split for tests, the
training split for training rows. Example lengths (prompt + answer) are within 2% of ``length``
(exact for the filler-based tasks). Examples are built so that the same seed gives the same
haystack at every depth: a length x depth grid reuses one tokenized text per seed.

Tiny models learn a task's format only when it is in their training mix: :func:`training_example`
returns the same generator's output on training seeds, and each :class:`Example` marks its answer
so the trainer can up-weight it.

Offline stand-ins for the benchmarks' data (every profile generates its examples here):
topics, entities and attribute values are seeded synthetic names; the re-rank relevance grades come
from which passages state a fact; ICL classes are the source documents of short passages; and
``summary`` asks for a document's title line, scored with ROUGE: the corpus has no human summaries
and HELMET's model judge (GPT-4o) is not available offline.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

TRAIN_SEED_OFFSET, TEST_SEED_OFFSET = 0, 10_000_000  # disjoint seed ranges for train and test
# No version to bump: this module's code is fingerprinted into the key of every cached evaluation
# that generates examples (lcx.evaluate.memo) and of every run trained on format rows it packs
# (lcx.train.run), so a change to what a generator makes retrains and re-evaluates what it feeds.


@dataclass
class Example:
    prompt_ids: list[int]
    answer_ids: list[int]
    answer: str
    meta: dict = field(default_factory=dict)  # task, length, depth, seed, answers, ...

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.answer_ids)


# A tokenized split of more tokens than this is read a document at a time (a pool's text, ProLong's
# training documents): at paper scale PG-19's books alone are ~2B tokens, ~70 GB as Python lists.
IN_MEMORY_TOKENS = 10**8


def in_memory(split) -> bool:
    """Whether a tokenized split (:func:`lcx.data.tokenize`'s ``datasets.Dataset``, or a dict of
    lists, always) is small enough to read into memory: up to :data:`IN_MEMORY_TOKENS` (none in
    the rehearsal, ``make rehearsal``, so that it runs the paper-scale path)."""
    from .profiles import rehearsal

    if not hasattr(split, "select_columns") or "n_tokens" not in split.column_names:
        return True  # lists, or a split lcx.data.tokenize did not make
    return not rehearsal() and sum(split["n_tokens"]) <= IN_MEMORY_TOKENS


class Documents(Sequence):
    """Documents of a tokenized split (a memory-mapped ``datasets.Dataset``), each read when it is
    asked for: rows ``indices`` of the split, of ``lengths`` tokens. A slice is another
    :class:`Documents`; a document is its list of token ids."""

    def __init__(self, split, indices, lengths):
        self.split = split.select_columns(["input_ids"])
        self.indices, self.lengths = list(indices), list(lengths)

    def take(self, order) -> Documents:
        out = Documents.__new__(Documents)
        out.split = self.split
        out.indices = [self.indices[i] for i in order]
        out.lengths = [self.lengths[i] for i in order]
        return out

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.take(range(len(self))[i])
        return self.split[self.indices[i]]["input_ids"]


class Pool:
    """Documents (token id lists) to cut real text from, longest first, with sentence boundaries;
    ``lengths``: their token counts. A :class:`Documents` is read a document at a time."""

    def __init__(self, tokenizer, docs, min_tokens: int = 64):
        self.tokenizer = tokenizer
        if not isinstance(docs, Documents):
            docs = list(docs)
        lengths = docs.lengths if isinstance(docs, Documents) else [len(d) for d in docs]
        keep = [i for i, n in enumerate(lengths) if n >= min_tokens]
        order = sorted(keep, key=lengths.__getitem__, reverse=True)  # stable: ties keep order
        self.lengths = [lengths[i] for i in order]
        self.docs = docs.take(order) if isinstance(docs, Documents) else [docs[i] for i in order]
        if not self.docs:
            raise ValueError(f"a task pool needs documents of at least {min_tokens} tokens")
        self.enders = _sentence_enders(tokenizer)

    @classmethod
    def from_tokens(cls, tokenizer, tokens, domains=None, min_tokens: int = 64) -> Pool:
        """A pool from one split of :func:`lcx.data.tokenize` (short documents left out); a split
        too large for memory (:func:`in_memory`) is read a document at a time."""
        if not in_memory(tokens):
            keep = [
                i
                for i, d in enumerate(tokens["domain"])
                if d != "short" and (domains is None or d in domains)
            ]
            n_tokens = list(tokens["n_tokens"])
            docs = Documents(tokens, keep, [n_tokens[i] for i in keep])
            return cls(tokenizer, docs, min_tokens)
        docs = [
            ids
            for ids, d in zip(tokens["input_ids"], tokens["domain"], strict=True)
            if d != "short" and (domains is None or d in domains)
        ]
        return cls(tokenizer, docs, min_tokens)

    def span(self, n: int, rng: random.Random) -> list[int]:
        """``n`` consecutive tokens of real text starting at a sentence start (documents joined
        by a blank line when one is too short)."""
        sep = _enc(self.tokenizer, "\n\n")
        doc = rng.randrange(len(self.docs))
        ids = self.docs[doc]
        start = 0
        if len(ids) > n:  # a random point in the first half, moved on to the next sentence start
            start = rng.randrange(max(1, (len(ids) - n) // 2 + 1))
            while start and start < len(ids) - n and ids[start - 1] not in self.enders:
                start += 1
        out = list(ids[start:])
        while len(out) < n:
            doc = (doc + 1) % len(self.docs)
            out += sep + list(self.docs[doc])
        return out[:n]

    def classes(self, part: int = 2048, max_parts: int = 400) -> list[list[list[int]]]:
        """ICL classes: the short sentences of a document or of a ``part``-token piece of one
        (when the pool has few documents), for up to ``max_parts`` pieces with 4+ sentences."""
        if not hasattr(self, "_classes"):
            pieces = (  # every document's first piece before any document's second
                self.docs[j][i : i + part]
                for i in range(0, self.lengths[0], part)
                for j, n in enumerate(self.lengths)
                if n > i
            )
            self._classes = []
            for piece in pieces:
                sents = self.sentences(piece, 40)
                if len(sents) >= 4:
                    self._classes.append(sents)
                if len(self._classes) == max_parts:
                    break
        return self._classes

    def sentences(self, ids: list[int], max_tokens: int) -> list[list[int]]:
        """The one-line sentences of ``ids`` that start with a capital, at most ``max_tokens``
        tokens each, re-encoded after a space."""
        out, cur = [], []
        for t in ids:
            cur.append(t)
            if t in self.enders:
                text = self.tokenizer.decode(cur).rsplit("\n", 1)[-1].strip()
                ids = _enc(self.tokenizer, " " + text)
                if 4 <= len(ids) <= max_tokens and text[:1].isupper():
                    out.append(ids)
                cur = []
        return out


@lru_cache(maxsize=8)
def _sentence_enders(tokenizer) -> frozenset[int]:
    """Token ids that end a sentence: they decode to text ending in . ! or ? (then whitespace)."""
    return frozenset(
        i
        for i in range(len(tokenizer))
        if tokenizer.decode([i]).rstrip(" ").endswith((".", "!", "?", ".\n"))
    )


def _enc(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _rng(seed: int, split: str, salt: str = "") -> random.Random:
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r} must be 'train' or 'test'")
    return random.Random(
        f"{seed + (TEST_SEED_OFFSET if split == 'test' else TRAIN_SEED_OFFSET)}{salt}"
    )


def _check(length: int, depth: float | None, fixed: int, task: str) -> int:
    if depth is not None and not 0 <= depth <= 1:
        raise ValueError(f"depth={depth!r} must be in [0, 1]")
    if length - fixed < 0:
        raise ValueError(f"length={length} is too short for {task} ({fixed} tokens minimum)")
    return length - fixed


def _insert(hay: list[int], needle: list[int], depth: float, enders) -> tuple[list[int], int]:
    """Insert ``needle`` at the sentence boundary nearest ``depth`` of ``hay``; returns the text
    and the insertion index."""
    cut = int(round(depth * len(hay)))
    bounds = [0, len(hay)] + [i + 1 for i, t in enumerate(hay) if t in enders]
    cut = min(bounds, key=lambda b: (abs(b - cut), b))
    return hay[:cut] + needle + hay[cut:], cut


def _example(tok, head, body, tail, answer: str, meta: dict) -> Example:
    """BOS + head + body + tail, then the answer; the few tokens a generator leaves unused
    (its text comes in whole pieces) are newlines before the tail, so the length is exact."""
    answer_ids = _enc(tok, " " + answer)
    pad = meta["length"] - (1 + len(head) + len(body) + len(tail) + len(answer_ids))
    if pad < 0:
        raise AssertionError(f"{meta['task']} overshot its length by {-pad} tokens")
    prompt = [tok.bos_token_id, *head, *body, *_enc(tok, "\n") * pad, *tail]
    return Example(prompt, answer_ids, answer, {**meta, "answers": [answer]})


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


_SYLLABLES = "ka lo mi ren tor vel sa dun fi gor ish ber al co ne ru pa tem yo zan".split()
TOPICS = (
    "gardening chess astronomy baking sailing pottery jazz beekeeping origami cycling volcanoes "
    "photography knitting surfing archery glaciers calligraphy opera falconry mushrooms tea "
    "lighthouses robotics kites fencing cheese mosaics bridges clocks rainforests"
).split()
CITIES = (
    "Lisbon Oslo Quito Hanoi Dakar Lima Perth Cairo Porto Riga Tunis Accra Malmo Bergen Kyoto "
    "Split Cork Graz Turin Sucre"
).split()
ATTRIBUTES = ("home town", "favourite city", "birthplace", "winter residence")


def _name(rng: random.Random) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(3)).capitalize()


# --- recall ---------------------------------------------------------------------------------------

PASSKEY_INTRO = "A pass key is hidden in the text below. Remember it."  # PI's, cut to one sentence
PASSKEY_FILLER = (
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
)
PASSKEY_QUESTION = "What is the pass key? The pass key is"


def _passkey_parts(tokenizer, key: str):
    head = _enc(tokenizer, PASSKEY_INTRO)
    needle = _enc(tokenizer, f" The pass key is {key}. Remember it. {key} is the pass key.")
    return (
        head,
        needle,
        _enc(tokenizer, " " + PASSKEY_QUESTION),
        _enc(tokenizer, " " + PASSKEY_FILLER),
    )


def passkey_min_length(tokenizer, digits: int = 5) -> int:
    """The shortest passkey example (no filler) in tokens."""
    head, needle, tail, _ = _passkey_parts(tokenizer, "0" * digits)
    return 1 + len(head) + len(needle) + len(tail) + len(_enc(tokenizer, " " + "0" * digits))


def passkey(
    tokenizer,
    length: int,
    depth: float,
    seed: int,
    split: str = "test",
    pool: Pool | None = None,
    digits: int = 5,
) -> Example:
    """A passkey example of exactly ``length`` tokens with the key at ``depth`` of the filler."""
    rng = _rng(seed, split)
    key = _digits(rng, digits)
    head, needle, tail, unit = _passkey_parts(tokenizer, key)
    answer = _enc(tokenizer, " " + key)
    budget = _check(length, depth, 1 + len(head) + len(needle) + len(tail) + len(answer), "passkey")
    filler = (unit * (budget // len(unit) + 1))[:budget]
    body, _ = _insert(filler, needle, depth, _sentence_enders(tokenizer))
    meta = {"task": "passkey", "length": length, "depth": depth, "seed": seed}
    return _example(tokenizer, head, body, tail, key, meta)


def needle(tokenizer, length, depth, seed, split="test", pool=None) -> Example:
    """A 7-digit "special magic number" for a city hidden in real text (RULER's NIAH needle; the
    Llama-3 80K grid of length x depth)."""
    rng = _rng(seed, split)
    city, key = rng.choice(CITIES), _digits(rng, 7)
    head = _enc(tokenizer, "Find the special magic number hidden in the text.\n\n")
    pin = _enc(tokenizer, f" The special magic number for {city} is: {key}.")
    tail = _enc(tokenizer, f"\n\nWhat is the special magic number for {city}? The number is")
    answer = _enc(tokenizer, " " + key)
    budget = _check(length, depth, 1 + len(head) + len(pin) + len(tail) + len(answer), "needle")
    hay = _pool(pool, "needle").span(budget, _rng(seed, split, "hay"))
    body, _ = _insert(hay, pin, depth, pool.enders)
    meta = {"task": "needle", "length": length, "depth": depth, "seed": seed}
    return _example(tokenizer, head, body, tail, key, meta)


def first_sentence(tokenizer, length, depth, seed, split="test", pool=None) -> Example:
    """FIRST-SENTENCE-RETRIEVAL (Llama 2 Long §4.1): real text of ``length`` tokens, then a request
    for its first sentence."""
    rng = _rng(seed, split)
    pool = _pool(pool, "first_sentence")
    tail = _enc(tokenizer, "\n\nThe first sentence of the text above was:")
    for _ in range(100):  # a stretch of a document with one-line sentences of 5-40 tokens
        ids = pool.docs[rng.randrange(len(pool.docs))]
        off = rng.randrange(max(1, len(ids) - length))
        ids = ids[off : off + length + 256]
        bounds = [i + 1 for i, t in enumerate(ids) if t in pool.enders]
        starts = [
            (a, b - a)
            for a, b in itertools.pairwise(bounds)
            if 5 <= b - a <= 40 and "\n" not in tokenizer.decode(ids[a:b]).strip()
        ]
        if starts:
            break
    else:
        raise ValueError("no document in the pool has a one-line sentence of 5-40 tokens")
    start, end = rng.choice(starts)
    text = ids[start : start + length]
    if len(text) < length:  # continue with other documents
        text += _enc(tokenizer, "\n\n") + pool.span(length - len(text), rng)
    first = tokenizer.decode(text[:end]).strip()
    answer = _enc(tokenizer, " " + first)
    budget = _check(length, None, 1 + len(tail) + len(answer) + end, "first_sentence") + end
    meta = {"task": "first_sentence", "length": length, "depth": None, "seed": seed}
    return _example(tokenizer, [], text[:budget], tail, first, meta)


def json_kv(tokenizer, length, depth, seed, split="test", pool=None) -> Example:
    """HELMET JSON KV: a JSON object of random hex keys and values; give one key's value. The
    queried pair sits at ``depth`` of the object."""
    rng = _rng(seed, split)
    head = _enc(tokenizer, "JSON data:\n")
    pair = lambda: (f"{rng.getrandbits(32):08x}", f"{rng.getrandbits(32):08x}")  # noqa: E731
    pairs, used = [], 0
    # the question and answer at their longest (a digit is one token; hex letters may merge)
    probe = _enc(tokenizer, "\n\nWhat is the value of key 00000000? The value is 00000000")
    budget = _check(length, depth, 1 + len(head) + len(probe), "json_kv")
    while True:  # grow by estimate, then trim to the real token count of the JSON text
        k, v = pair()
        pairs.append((k, v))
        used += len(_enc(tokenizer, f' "{k}": "{v}",'))
        if used > budget:
            break
    body = _enc(tokenizer, json.dumps(dict(pairs)))
    while len(body) > budget and len(pairs) > 1:
        pairs.pop()
        body = _enc(tokenizer, json.dumps(dict(pairs)))
    if len(body) > budget:
        raise ValueError(f"length={length} is too short for json_kv: one pair needs {len(body)}")
    while True:  # the asked key and value may take more tokens than the probe's zeros (Llama 3
        # groups digits in threes, a small BPE merges "00"): drop pairs until they fit
        where = min(len(pairs) - 1, int(depth * len(pairs)))
        key, value = pairs[where]
        tail = _enc(tokenizer, f"\n\nWhat is the value of key {key}? The value is")
        need = 1 + len(head) + len(body) + len(tail) + len(_enc(tokenizer, " " + value))
        if need <= length or len(pairs) == 1:
            break
        pairs.pop()
        body = _enc(tokenizer, json.dumps(dict(pairs)))
    meta = {"task": "json_kv", "length": length, "depth": depth, "seed": seed, "pairs": len(pairs)}
    return _example(tokenizer, head, body, tail, value, meta)


def topic(tokenizer, length, depth, seed, split="test", pool=None, section: int = 96) -> Example:
    """Llama-3 80K topic retrieval (LongChat): a conversation of topic sections of ~``section``
    tokens each; ask for the first topic."""
    rng = _rng(seed, split)
    pool = _pool(pool, "topic")
    tail = _enc(
        tokenizer, "\nUSER: What is the first topic we discussed?\nASSISTANT: The first topic was"
    )
    longest = max(len(_enc(tokenizer, " " + t)) for t in TOPICS)
    budget = _check(length, None, 1 + len(tail) + longest, "topic")
    k = max(2, round(budget / section))
    topics = rng.sample(TOPICS, min(k, len(TOPICS)))
    topics += [rng.choice(TOPICS) for _ in range(k - len(topics))]
    body, text_rng = [], _rng(seed, split, "hay")
    turns = [_enc(tokenizer, f"USER: Let us talk about {t}.\nASSISTANT:") for t in topics]
    each = (budget - sum(map(len, turns))) // k
    if each < 8:
        raise ValueError(f"length={length} is too short for topic: sections of {each} tokens")
    for turn in turns:
        body += turn + pool.span(max(1, each - 1), text_rng) + _enc(tokenizer, "\n")
    meta = {"task": "topic", "length": length, "depth": None, "seed": seed, "topics": k}
    return _example(tokenizer, [], body, tail, topics[0], meta)


# --- RAG, re-rank, ICL, QA, summarization ---------------------------------------------------------


def _facts(rng, k):
    """``k`` distinct (entity, attribute, value) facts; all share one attribute."""
    attr, names = rng.choice(ATTRIBUTES), set()
    while len(names) < k:
        names.add(_name(rng))
    return [(n, attr, rng.choice(CITIES)) for n in sorted(names)]


def _passages(tokenizer, pool, statements, budget, rng, label="Document [{}]: "):
    """One passage of real text per statement (``[]`` for none), sharing ``budget`` tokens; each
    statement is put at a random sentence boundary of its passage."""
    docs, each = [], budget // len(statements)
    for i, extra in enumerate(statements):
        title = _enc(tokenizer, label.format(i + 1))
        room = each - len(title) - len(extra) - 1
        if room < 4:
            raise ValueError(f"budget={budget} is too short for {len(statements)} passages")
        text = pool.span(room, rng)
        body, _ = _insert(text, extra, rng.random(), pool.enders)
        docs += title + body + _enc(tokenizer, "\n")
    return docs


def multidoc_qa(tokenizer, length, depth, seed, split="test", pool=None, doc_tokens=128):
    """Lost-in-the-middle multi-document QA: k documents of ~``doc_tokens``, each stating one
    synthetic fact; the question asks for the gold one, placed at ``depth`` of the list."""
    rng = _rng(seed, split)
    pool = _pool(pool, "multidoc_qa")
    head = _enc(tokenizer, "Answer the question using the documents.\n\n")
    k = max(2, round(_check(length, depth, 1 + len(head) + 40, "multidoc_qa") / doc_tokens))
    facts = _facts(rng, k)
    gold = min(k - 1, int(round(depth * (k - 1))))
    name, attr, value = facts[0]
    facts = facts[1 : gold + 1] + [facts[0]] + facts[gold + 1 :]
    tail = _enc(tokenizer, f"\nQuestion: What is the {attr} of {name}?\nAnswer:")
    budget = length - 1 - len(head) - len(tail) - len(_enc(tokenizer, " " + value))
    statements = [_enc(tokenizer, " The {1} of {0} is {2}.".format(*f)) for f in facts]
    docs = _passages(tokenizer, pool, statements, budget, _rng(seed, split, "hay"))
    meta = {"task": "multidoc_qa", "length": length, "depth": depth, "seed": seed, "docs": k}
    return _example(tokenizer, head, docs, tail, value, {**meta, "gold": gold})


def rerank(tokenizer, length, depth, seed, split="test", pool=None, doc_tokens=96):
    """HELMET-style re-ranking: passages about a query entity graded 2 (state its fact), 1 (name
    it) or 0; the model lists passage ids, best first; the answer is the ideal ranking."""
    rng = _rng(seed, split)
    pool = _pool(pool, "rerank")
    head = _enc(tokenizer, "Rank the documents by relevance to the query.\n\n")
    k = max(3, round(_check(length, None, 1 + len(head) + 80, "rerank") / doc_tokens))
    name, attr, value = _facts(rng, 1)[0]
    grades = [2] * max(1, k // 8) + [1] * max(1, k // 8)
    grades += [0] * (k - len(grades))
    rng.shuffle(grades)
    order = sorted(range(k), key=lambda i: (-grades[i], i))
    ideal = " > ".join(f"[{i + 1}]" for i in order[:10])
    tail = _enc(tokenizer, f"\nQuery: {attr} of {name}\nRanking:")
    budget = length - 1 - len(head) - len(tail) - len(_enc(tokenizer, " " + ideal))
    says = {2: f" The {attr} of {name} is {value}.", 1: f" {name} was mentioned here.", 0: ""}
    statements = [_enc(tokenizer, says[g]) for g in grades]
    docs = _passages(tokenizer, pool, statements, budget, _rng(seed, split, "hay"), "[{}] ")
    meta = {"task": "rerank", "length": length, "depth": None, "seed": seed, "docs": k}
    relevance = {i + 1: g for i, g in enumerate(grades) if g}
    return _example(tokenizer, head, docs, tail, ideal, {**meta, "relevance": relevance})


def icl(tokenizer, length, depth, seed, split="test", pool=None, classes: int = 4):
    """HELMET ICL with abstract labels: sentences from ``classes`` documents, each document's
    sentences labelled with a random number; class-balanced demonstrations fill the context, then
    a held-back sentence from one of the documents is classified."""
    rng = _rng(seed, split)
    pool = _pool(pool, "icl")
    parts = pool.classes()
    if len(parts) < classes:
        raise ValueError(f"icl needs {classes} documents with 4+ short sentences in the pool")
    labels = rng.sample(range(10, 100), classes)
    sents = {c: list(p) for c, p in enumerate(rng.sample(parts, classes))}
    for v in sents.values():
        rng.shuffle(v)
    query_class = rng.randrange(classes)
    query = sents[query_class].pop()
    label_tok = lambda c: _enc(tokenizer, f"\nlabel: {labels[c]}\n\n")  # noqa: E731
    tail = _enc(tokenizer, "text:") + query + _enc(tokenizer, "\nlabel:")
    budget = _check(length, None, 1 + len(tail) + 3, "icl")
    body, used, i = [], 0, 0
    while True:  # round-robin over classes, cycling through each class's sentences
        c = i % classes
        demo = _enc(tokenizer, "text:") + sents[c][(i // classes) % len(sents[c])] + label_tok(c)
        if used + len(demo) > budget:
            if not body:
                raise ValueError(f"length={length} is too short for one icl demonstration")
            break
        body, used, i = body + demo, used + len(demo), i + 1
    meta = {
        "task": "icl",
        "length": length,
        "depth": None,
        "seed": seed,
        "shots": i,
        "classes": classes,
    }
    return _example(tokenizer, [], body, tail, str(labels[query_class]), meta)


def doc_qa(tokenizer, length, depth, seed, split="test", pool=None) -> Example:
    """Long-document QA: a synthetic fact stated once at ``depth`` of a real document; a question
    about it, scored with token F1."""
    rng = _rng(seed, split)
    name, attr, value = _facts(rng, 1)[0]
    fact = _enc(tokenizer, f" The {attr} of {name} is {value}.")
    tail = _enc(tokenizer, f"\n\nQuestion: What is the {attr} of {name}?\nAnswer:")
    answer = _enc(tokenizer, " " + value)
    budget = _check(length, depth, 1 + len(fact) + len(tail) + len(answer), "doc_qa")
    hay = _pool(pool, "doc_qa").span(budget, _rng(seed, split, "hay"))
    body, _ = _insert(hay, fact, depth, pool.enders)
    meta = {"task": "doc_qa", "length": length, "depth": depth, "seed": seed}
    return _example(tokenizer, [], body, tail, value, meta)


# Llama 2 Long App. D, Fig. 11: the long QA templates (normal and short answer).
SELF_INSTRUCT_HEAD = (
    "[INST] You are given a long text (delimited by triple quotes) and a question.\n"
    'Read the text and answer the question in the end{short}.\n"""\n'
)
SELF_INSTRUCT_SHORT = (
    " as concisely as you can,\nusing a single phrase or sentence if possible. "
    "Do not provide any explanation"
)


def self_instruct(tokenizer, length, depth, seed, split="test", pool=None) -> Example:
    """Llama 2 Long's self-instruct long QA (§4.3, App. D): a question-answer pair written from one
    chunk of a long document, asked with the whole document as context in App. D's templates.

    The paper has Llama 2 Chat write the pair; here a program writes it from a sentence of the
    chunk at ``depth`` (the nearest one-line sentence of 7-30 words that fits): the normal-answer question asks how the
    sentence that begins with its first four words goes on, the short-answer one for the
    sentence's last word. Which of the two is chosen at random, as in the paper. Scored with token
    F1 (the paper's QA metrics)."""
    rng = _rng(seed, split)
    pool = _pool(pool, "self_instruct")
    short = rng.random() < 0.5
    head = _enc(tokenizer, SELF_INSTRUCT_HEAD.format(short=SELF_INSTRUCT_SHORT if short else ""))
    budget = length - 1 - len(head) - 48  # the question and answer take ~30-80 tokens
    if budget < 24:
        raise ValueError(f"length {length} is too short for self_instruct")

    def qa(words):
        opening = " ".join(words[:4])
        if short:
            q = f'What is the last word of the sentence that begins "{opening}"?'
            return q, words[-1].strip(".,;:!?\"')(")
        return f'How does the sentence that begins "{opening}" go on?', " ".join(words[4:])

    for _ in range(100):
        body = pool.span(budget, rng)
        bounds = [0] + [i + 1 for i, t in enumerate(body) if t in pool.enders]
        cands = []
        for a, b in itertools.pairwise(bounds):
            text = tokenizer.decode(body[a:b]).strip()
            words = text.split()
            if (
                b - a <= 100
                and "\n" not in text
                and 7 <= len(words) <= 30
                and text[:1].isupper()
                and text.startswith(" ".join(words[:4]))  # single spaces: quotable as is
            ):
                cands.append((abs(a / len(body) - depth), a, b, words))
        for _, _, end, words in sorted(cands, key=lambda c: c[:2]):  # nearest depth that fits
            question, answer = qa(words)
            tail = _enc(tokenizer, f'\n"""\nQuestion: {question}\n[/INST]\n')
            room = length - (1 + len(head) + len(tail) + len(_enc(tokenizer, " " + answer)))
            if room >= end:
                break
        else:
            continue
        break
    else:
        raise ValueError(
            f"length {length} is too short for self_instruct: no sentence of 7-30 words fits"
        )
    if room < len(body):  # a long question: the text ends earlier
        body = body[:room]
    else:  # a short one: the text goes on into the next document
        body = (body + _enc(tokenizer, "\n\n") + pool.span(room, rng))[:room]
    meta = {"task": "self_instruct", "length": length, "depth": depth, "seed": seed}
    return _example(tokenizer, head, body, tail, answer, {**meta, "short_answer": short})


# --- Llama-3 80K's synthetic long QA (§1): multi-turn conversations over one long context ----------


@dataclass
class Conversation:
    """One long context and its question-answer turns (Llama-3 80K trains each context's QA pairs
    as one multi-turn conversation)."""

    context_ids: list[int]  # BOS, the instruction and the context
    turns: list[tuple[list[int], list[int]]]  # (question ids, answer ids) per turn
    answers: list[str]
    meta: dict = field(default_factory=dict)

    @property
    def length(self) -> int:
        return len(self.context_ids) + _turn_tokens(self.turns)


def _character(tokenizer, ids) -> str | None:
    """A book's main character: its most frequent capitalised word that is not a sentence's first."""
    words = re.findall(r"(?<=[a-z,;] )([A-Z][a-z]{2,})\b", tokenizer.decode(ids))
    common = Counter(w for w in words if w not in _STOP_NAMES).most_common(1)
    return common[0][0] if common and common[0][1] >= 3 else None


_STOP_NAMES = frozenset(
    "The This That Then There They When What Which While With From Into And But".split()
)


def _turn_tokens(turns) -> int:
    return sum(len(q) + len(a) for q, a in turns)


def _long_qa_start(tokenizer, seed: int, split: str, pool, family: str):
    """What every family starts from: its random stream (salted with the family's name), the
    pool, and the instruction that opens the context."""
    rng = _rng(seed, split, family)
    pool = _pool(pool, "long_qa")
    return rng, pool, _enc(tokenizer, "Read the text below and answer the questions after it.\n\n")


def _qa_ids(tokenizer, qa) -> list[tuple[list[int], list[int]]]:
    """(question ids, answer ids) of each (question, answer) turn."""
    return [
        (_enc(tokenizer, f"\n\nQuestion: {q}\nAnswer:"), _enc(tokenizer, " " + a)) for q, a in qa
    ]


def _context_room(length: int, head, reserved: int, family: str) -> int:
    """Tokens left for the context after BOS, the instruction and ``reserved`` tokens of turns."""
    room = length - 1 - len(head) - reserved
    if room < 64:
        raise ValueError(f"length {length} is too short for a {family} conversation")
    return room


def _conversation(tokenizer, head, context, qa, family, length, seed, **meta) -> Conversation:
    return Conversation(
        [tokenizer.bos_token_id, *head, *context],
        _qa_ids(tokenizer, qa),
        [a for _, a in qa],
        {"task": "long_qa", "family": family, "length": length, "seed": seed, **meta},
    )


def _stated_in_text(tokenizer, pool, rng, facts, qa, length, head, family) -> list[int]:
    """Real text of the room the turns leave, with one statement per fact inserted in order, the
    j-th at a random depth in [j/n, (j+1)/n) of the text (to the nearest sentence boundary)."""
    stmts = [_enc(tokenizer, f" The {a} of {n} is {v}.") for n, a, v in facts]
    reserved = _turn_tokens(_qa_ids(tokenizer, qa)) + sum(map(len, stmts))
    context = pool.span(_context_room(length, head, reserved, family), rng)
    for j, stmt in enumerate(stmts):
        depth = (j + rng.random()) / len(stmts)  # spread over the text, in order
        context, _ = _insert(context, stmt, depth, pool.enders)
    return context


def single_detail(tokenizer, length: int, seed: int, split="train", pool=None, turns=3):
    """Llama-3 80K §1's single-detail QA: ``turns`` facts stated once each at random places of
    one long text (spread over it, in order); each turn asks for one (a detail from one chunk)."""
    rng, pool, head = _long_qa_start(tokenizer, seed, split, pool, "single_detail")
    facts = _facts(rng, turns)
    qa = [(f"What is the {a} of {n}?", v) for n, a, v in facts]
    context = _stated_in_text(tokenizer, pool, rng, facts, qa, length, head, "single_detail")
    return _conversation(tokenizer, head, context, qa, "single_detail", length, seed)


def multi_detail_homogeneous(tokenizer, length: int, seed: int, split="train", pool=None, turns=3):
    """Llama-3 80K §1's multi-detail QA over one text: ``2 turns + 2`` facts that share ``turns``
    values, stated in a shuffled order over one long text; each turn asks for every person with
    one value, in order of appearance (details aggregated from several places of one text)."""
    family = "multi_detail_homogeneous"
    rng, pool, head = _long_qa_start(tokenizer, seed, split, pool, family)
    values = rng.sample(CITIES, turns)
    facts = [(n, a, values[i % turns]) for i, (n, a, _) in enumerate(_facts(rng, 2 * turns + 2))]
    rng.shuffle(facts)
    attr = facts[0][1]
    qa = [
        (
            f"Whose {attr} is {value}? Name them in the order the text does.",
            ", ".join(n for n, _, v in facts if v == value),
        )
        for value in values
    ]
    context = _stated_in_text(tokenizer, pool, rng, facts, qa, length, head, family)
    return _conversation(tokenizer, head, context, qa, family, length, seed)


def multi_detail_heterogeneous(
    tokenizer, length: int, seed: int, split="train", pool=None, turns=3
):
    """Llama-3 80K §1's multi-detail QA across documents: k passages of one domain (the paper
    clusters a corpus; our domains are the clusters: pass a pool of one domain,
    ``Pool.from_tokens(..., domains=[d])``), each of ``turns`` facts stated in two of them; each
    turn asks which two documents state it (a similarity across texts)."""
    family = "multi_detail_heterogeneous"
    rng, pool, head = _long_qa_start(tokenizer, seed, split, pool, family)
    k = max(4, min(12, length // 160))
    statements, qa = [[] for _ in range(k)], []
    for name, attr, value in _facts(rng, turns):
        pair = sorted(rng.sample(range(k), 2))
        for i in pair:
            statements[i] = statements[i] + _enc(tokenizer, f" The {attr} of {name} is {value}.")
        qa.append(
            (
                f"Which two documents state the {attr} of {name}?",
                f"Documents [{pair[0] + 1}] and [{pair[1] + 1}].",
            )
        )
    room = _context_room(length, head, _turn_tokens(_qa_ids(tokenizer, qa)), family)
    context = _passages(tokenizer, pool, statements, room, rng)
    return _conversation(tokenizer, head, context, qa, family, length, seed)


def biography(tokenizer, length: int, seed: int, split="train", pool=None, turns=3):
    """Llama-3 80K §1's biography QA, extractively: a book's main character (its most frequent
    mid-sentence name, :func:`_character`); the one turn asks for the first two sentences that
    mention them (at most 100 tokens), quoted in ``meta["quotes"]``. ``turns`` is ignored: a
    book has one main character."""
    rng, pool, head = _long_qa_start(tokenizer, seed, split, pool, "biography")
    question = "Write a short biography of {}: quote the first two sentences about them."
    reserved = len(_qa_ids(tokenizer, [(question.format("Someone"), "")])[0][0]) + 100
    room = _context_room(length, head, reserved, "biography")
    books = pool.docs[: max(1, sum(n >= room for n in pool.lengths))]  # longest first
    for _ in range(50):
        context = list(books[rng.randrange(len(books))][:room])
        name = _character(tokenizer, context)
        if name:
            break
    else:
        raise ValueError("no document in the pool has a recurring character name")
    sents = [
        x.strip()
        for x in re.split(r"(?<=[.!?])\s+|\n+", tokenizer.decode(context))
        if re.search(rf"\b{name}\b", x) and 4 <= len(x.split()) <= 30
    ]
    words = " ".join(sents[:2]).split()
    while len(_enc(tokenizer, " " + " ".join(words))) > 100:  # the reserved 100 tokens
        words.pop()
    qa = [(question.format(name), " ".join(words))]
    return _conversation(tokenizer, head, context, qa, "biography", length, seed, quotes=sents[:2])


# Llama-3 80K's families of synthetic long QA (§1), by name, as TASKS holds the probe tasks.
LONG_QA = {
    f.__name__: f
    for f in (single_detail, multi_detail_homogeneous, multi_detail_heterogeneous, biography)
}
LONG_QA_FAMILIES = tuple(LONG_QA)


def long_qa(
    tokenizer, length: int, seed: int, split="train", pool=None, family="single_detail", turns=3
) -> Conversation:
    """A long-context QA conversation of about ``length`` tokens in one of Llama-3 80K's families
    (:data:`LONG_QA`: :func:`single_detail`, :func:`multi_detail_homogeneous`,
    :func:`multi_detail_heterogeneous`, :func:`biography`), written by program where the paper
    prompted GPT-4."""
    if family not in LONG_QA:
        raise ValueError(f"family={family!r} is not one of {LONG_QA_FAMILIES}")
    return LONG_QA[family](tokenizer, length, seed, split, pool, turns)


BOOKSUM_QUESTION = "\n\nQ: Can you write an appropriate summary of the above paragraphs?\nA:"


_HEADERS = frozenset({"name", "head1 name"})  # man pages and POD: the title is on the next line


def _is_markup(line: str) -> bool:
    """A line that is not a title: blank, an rST directive or label (``.. x::``), a POD command
    other than a heading (``=encoding utf8``), or an underline/overline of punctuation."""
    s = line.strip()
    return (
        not s
        or s.startswith("..")
        or (s.startswith("=") and not s.startswith("=head"))
        or not any(ch.isalnum() for ch in s)
    )


def title_line(text: str) -> tuple[str, str]:
    """``(title, rest)``: a document's title line and the text after it. Skips markup lines, and
    a ``NAME`` header (man pages, POD) gives way to the line under it ("ls - list directory
    contents"), which is what the document is about; otherwise the first line of text."""
    lines = text.split("\n")
    i = 0
    while i < len(lines) and _is_markup(lines[i]):
        i += 1
    if i < len(lines) and lines[i].strip(" #=*-").lower() in _HEADERS:
        i += 1
        while i < len(lines) and _is_markup(lines[i]):
            i += 1
    if i >= len(lines):
        return "", ""
    return lines[i].strip(" #=*-"), "\n".join(lines[i + 1 :])


def summary(
    tokenizer, length, depth, seed, split="test", pool=None, question="\n\nTitle of the text above:"
) -> Example:
    """A document's title (its first line of text, or the line under a man page's or POD's ``NAME``
    header, :func:`title_line`) from the rest of it, scored with ROUGE: the offline stand-in for
    long summarization (no human summaries or model judge here). ``question=BOOKSUM_QUESTION``
    gives Together's BookSum prompt."""
    rng = _rng(seed, split)
    pool = _pool(pool, "summary")
    tail = _enc(tokenizer, question)
    for _ in range(100):
        doc = pool.docs[rng.randrange(len(pool.docs))]
        title, rest = title_line(tokenizer.decode(doc[: length + 64]).lstrip())
        if 3 <= len(title) and len(_enc(tokenizer, " " + title)) <= 32 and rest.strip():
            break
    else:
        raise ValueError("no document in the pool has a usable title line")
    budget = _check(length, None, 1 + len(tail) + len(_enc(tokenizer, " " + title)), "summary")
    body = _enc(tokenizer, rest.strip())[:budget]
    if len(body) < budget:  # short document: continue with other text, as a haystack
        body += _enc(tokenizer, "\n\n") + pool.span(budget - len(body), rng)
    meta = {"task": "summary", "length": length, "depth": None, "seed": seed}
    return _example(tokenizer, [], body[:budget], tail, title, meta)


def missing_chunk(tokenizer, length, depth, seed, split="test", pool=None) -> Example:
    """Fill in the missing chunk (Together's UL2-style phase-1 data): a span of real text is cut
    out at ``depth`` and marked; the model writes it at the end, so it learns to use the context
    on both sides of a gap. A training format, not a probe."""
    pool = _pool(pool, "missing_chunk")
    k = max(8, min(64, length // 16))
    mark, tail = _enc(tokenizer, " [MISSING]"), _enc(tokenizer, "\n\nThe missing text:")
    _check(length, depth, 1 + len(mark) + len(tail) + 2 * k + 8, "missing_chunk")
    text = pool.span(length, _rng(seed, split, "hay"))
    _, cut = _insert(text[: len(text) - k], [], depth, pool.enders)
    cut = max(1, cut)
    answer = tokenizer.decode(text[cut : cut + k]).strip()
    answer_ids = _enc(tokenizer, " " + answer)
    before, after = text[:cut], text[cut + k :]
    excess = max(0, 1 + cut + len(mark) + len(after) + len(tail) + len(answer_ids) - length)
    trim = min(excess, len(after))  # fit the length: shorten the text after the gap, then before
    after, before = after[: len(after) - trim], before[excess - trim :]
    meta = {"task": "missing_chunk", "length": length, "depth": depth, "seed": seed}
    return _example(tokenizer, [], before + mark + after, tail, answer, meta)


def _pool(pool: Pool | None, task: str) -> Pool:
    if pool is None:
        raise ValueError(f"task {task!r} cuts real text: pass pool=Pool.from_tokens(...)")
    return pool


@dataclass(frozen=True)
class Task:
    name: str
    category: str  # HELMET category (ProLong Table 10 macro-averages per category)
    generate: object
    metric: str  # the headline metric (lcx.metrics)
    max_new_tokens: int
    uses_depth: bool
    needs_pool: bool = True
    probe: bool = True  # part of the evaluation suite (False: a training format or a variant)
    kwargs: dict = field(default_factory=dict)  # fixed arguments of the generator


TASKS = {
    t.name: t
    for t in [
        Task("passkey", "recall", passkey, "per_digit", 8, True, needs_pool=False),
        Task("needle", "recall", needle, "per_digit", 10, True),
        Task("first_sentence", "recall", first_sentence, "rougeL", 44, False),
        Task("json_kv", "recall", json_kv, "subem", 12, True, needs_pool=False),
        Task("topic", "recall", topic, "subem", 6, False),
        Task("multidoc_qa", "rag", multidoc_qa, "subem", 6, True),
        Task("rerank", "rerank", rerank, "ndcg@10", 48, False),
        Task("icl", "icl", icl, "exact", 4, False),
        Task("doc_qa", "qa", doc_qa, "f1", 6, True),
        Task("summary", "summ", summary, "rougeL", 34, False),
        Task("missing_chunk", "pretrain", missing_chunk, "rougeL", 70, True, probe=False),
        Task("self_instruct", "qa", self_instruct, "f1", 40, True, probe=False),  # Llama 2 Long
        # Together's variants: lost-in-the-middle QA with short documents (k scales with the
        # length) and summarization in BookSum's prompt format
        Task(
            "multidoc_qa_k",
            "rag",
            multidoc_qa,
            "subem",
            6,
            True,
            probe=False,
            kwargs={"doc_tokens": 48},
        ),
        Task(
            "booksum",
            "summ",
            summary,
            "rougeL",
            34,
            False,
            probe=False,
            kwargs={"question": BOOKSUM_QUESTION},
        ),
    ]
}
PROBES = [name for name, t in TASKS.items() if t.probe]  # the evaluation suite


def generate(
    task: str,
    tokenizer,
    length: int,
    depth: float | None,
    seed: int,
    split="test",
    pool: Pool | None = None,
) -> Example:
    """One example of ``task`` (a key of :data:`TASKS`)."""
    if task not in TASKS:
        raise ValueError(f"task={task!r} is not one of {tuple(TASKS)}")
    t = TASKS[task]
    depth = 0.5 if depth is None else depth
    return t.generate(tokenizer, length, depth, seed, split, pool, **t.kwargs)


def training_example(task: str, tokenizer, length: int, rng: random.Random, pool=None) -> Example:
    """A training-format example of ``task`` (training seeds, random depth), for format rows."""
    return generate(
        task, tokenizer, length, rng.random(), rng.randrange(TEST_SEED_OFFSET), "train", pool
    )
