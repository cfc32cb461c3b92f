"""The probe-suite generators: length, answer placement, determinism, train/test disjointness."""

import json
import random
import re
from collections import Counter

import pytest

from lcx import tasks


@pytest.fixture(scope="module")
def setup(tiny):
    tok, t = tiny
    return tok, tasks.Pool.from_tokens(tok, t["test"]), tasks.Pool.from_tokens(tok, t["train"])


LENGTHS = (256, 1000, 4096)


@pytest.mark.parametrize("name", list(tasks.TASKS))
@pytest.mark.parametrize("length", LENGTHS)
def test_length_within_two_percent_and_never_above(setup, name, length):
    tok, test_pool, _ = setup
    for seed in range(3):
        for depth in (0.0, 0.5, 1.0):
            ex = tasks.generate(name, tok, length, depth, seed, "test", test_pool)
            assert 0.98 * length <= ex.length <= length, (name, seed, depth, ex.length)
            assert (
                ex.prompt_ids[0] == tok.bos_token_id and tok.bos_token_id not in ex.prompt_ids[1:]
            )
            assert tok.decode(ex.answer_ids).strip() == ex.answer


@pytest.mark.parametrize("name", list(tasks.TASKS))
def test_deterministic_varied_and_train_test_disjoint(setup, name):
    tok, test_pool, train_pool = setup
    a = tasks.generate(name, tok, 512, 0.3, 7, "test", train_pool)
    b = tasks.generate(name, tok, 512, 0.3, 7, "test", train_pool)
    assert a.prompt_ids == b.prompt_ids and a.answer == b.answer

    def gen(s, split, pool):
        return tuple(tasks.generate(name, tok, 512, 0.3, s, split, pool).prompt_ids)

    assert len({gen(s, "test", train_pool) for s in range(20)}) >= 15  # seeds vary the examples
    # test seeds on held-out documents never meet training seeds on training documents
    assert not {gen(s, "test", test_pool) for s in range(20)} & {
        gen(s, "train", train_pool) for s in range(20)
    }
    if not tasks.TASKS[name].needs_pool:  # synthetic tasks: the seed ranges alone are disjoint
        assert not {gen(s, "test", None) for s in range(20)} & {
            gen(s, "train", None) for s in range(20)
        }


def test_pools_are_disjoint_documents(setup):
    _, test_pool, train_pool = setup
    assert not {tuple(d) for d in test_pool.docs} & {tuple(d) for d in train_pool.docs}


def _find(seq, sub):
    return next(i for i in range(len(seq) - len(sub) + 1) if seq[i : i + len(sub)] == sub)


@pytest.mark.parametrize("name", ["passkey", "needle", "doc_qa"])
def test_needle_depth_and_shared_haystack(setup, name):
    """The answer's statement sits at the requested depth (to the nearest sentence), and every
    depth of a seed uses the same haystack: removing the needle gives identical text."""
    tok, pool, _ = setup
    exs = {
        d: tasks.generate(name, tok, 2000, d, 3, "test", pool) for d in (0.0, 0.25, 0.5, 0.75, 1.0)
    }
    key = tok(" " + exs[0.0].answer, add_special_tokens=False)["input_ids"]
    positions = {d: _find(e.prompt_ids, key) / len(e.prompt_ids) for d, e in exs.items()}
    assert sorted(positions, key=positions.get) == sorted(positions)
    for d, p in positions.items():
        assert abs(p - d) < 0.1, (d, p)
    # same haystack and needle at every depth: only their order differs (a different haystack
    # per depth would change the token counts)
    counts = [Counter(e.prompt_ids) for e in exs.values()]
    assert all(c == counts[0] for c in counts[1:])
    assert len({tuple(e.prompt_ids) for e in exs.values()}) == len(exs)


@pytest.mark.parametrize("depth", [0.0, 0.5, 1.0])
def test_multidoc_gold_position(setup, depth):
    tok, pool, _ = setup
    ex = tasks.generate("multidoc_qa", tok, 2048, depth, 1, "test", pool)
    k, gold = ex.meta["docs"], ex.meta["gold"]
    assert gold == round(depth * (k - 1))
    docs = tok.decode(ex.prompt_ids).split("Document [")[1:]
    assert len(docs) == k
    question = tok.decode(ex.prompt_ids).split("Question: What is the ")[1]
    attr, name = question.split("?")[0].split(" of ")
    stating = [i for i, d in enumerate(docs) if f"{attr} of {name} is {ex.answer}" in d]
    assert stating == [gold]


def test_json_kv_answer_is_the_value_of_the_asked_key(setup):
    tok, _, _ = setup
    ex = tasks.generate("json_kv", tok, 1024, 0.5, 0, "test", None)
    text = tok.decode(ex.prompt_ids, skip_special_tokens=True)
    obj = json.loads(text.split("JSON data:\n")[1].split("\n\nWhat")[0])
    key = text.split("value of key ")[1].split("?")[0]
    assert obj[key] == ex.answer and len(obj) == ex.meta["pairs"]
    assert list(obj).index(key) == min(len(obj) - 1, int(0.5 * len(obj)))


def test_first_sentence_answer_opens_the_text(setup):
    tok, pool, _ = setup
    for seed in range(5):
        ex = tasks.generate("first_sentence", tok, 512, None, seed, "test", pool)
        text = tok.decode(ex.prompt_ids, skip_special_tokens=True)
        assert text.lstrip().startswith(ex.answer) and ex.answer.endswith((".", "!", "?"))


def test_self_instruct_asks_about_a_sentence_of_the_document_near_depth(setup):
    """App. D's templates; the answer is the rest (normal) or the last word (short) of a sentence
    that is in the document, beginning with the quoted words, near ``depth``; both kinds occur."""
    tok, pool, _ = setup
    kinds, where = Counter(), {0.1: [], 0.9: []}
    for seed in range(16):
        for depth in (0.1, 0.9):
            ex = tasks.generate("self_instruct", tok, 2048, depth, seed, "test", pool)
            text = tok.decode(ex.prompt_ids, skip_special_tokens=True)
            assert text.startswith("[INST] You are given a long text") and text.endswith(
                "[/INST]\n"
            )
            doc = text[text.index('"""') + 3 : text.rindex('"""')]  # code may have its own
            opening = text.rsplit('begins "', 1)[1].split('"')[0]
            at = doc.index(opening)
            sentence = doc[at:].split("\n")[0]
            if ex.meta["short_answer"]:
                assert "as concisely as you can" in text
                following = [w.strip(".,;:!?\"')(") for w in sentence.split()[:40]]
                assert ex.answer in following[4:]
            else:
                assert "concisely" not in text
                assert sentence.startswith(f"{opening} {ex.answer}")
            where[depth].append(at / len(doc))
            kinds[ex.meta["short_answer"]] += 1
    assert min(kinds.values()) >= 8
    # the nearest fitting sentence (the tiny pool is mostly code, with few): later for a later depth
    early, late = where[0.1], where[0.9]
    assert all(a <= b for a, b in zip(early, late, strict=True))
    assert (sum(late) - sum(early)) / 16 > 0.2, where


def test_topic_and_icl_and_rerank_answers(setup):
    tok, pool, _ = setup
    ex = tasks.generate("topic", tok, 2048, None, 0, "test", pool)
    text = tok.decode(ex.prompt_ids)
    assert text.index(f"talk about {ex.answer}.") == text.index("talk about ")
    ex = tasks.generate("icl", tok, 2048, None, 0, "test", setup[2])
    text = tok.decode(ex.prompt_ids)
    labels = [line.split()[-1] for line in text.splitlines() if line.startswith("label: ")]
    counts = {lab: labels.count(lab) for lab in set(labels)}
    assert (
        ex.answer in counts
        and len(counts) == 4
        and max(counts.values()) - min(counts.values()) <= 1
    )
    ex = tasks.generate("rerank", tok, 2048, None, 0, "test", pool)
    rel = ex.meta["relevance"]
    assert 2 in rel.values() and 1 in rel.values()
    ideal = [int(x.strip("[] ")) for x in ex.answer.split(">")]
    assert [rel.get(i, 0) for i in ideal] == sorted((rel.get(i, 0) for i in ideal), reverse=True)


def test_bad_inputs_fail_clearly(setup):
    tok, pool, _ = setup
    with pytest.raises(ValueError, match="too short"):
        tasks.generate("needle", tok, 20, 0.5, 0, "test", pool)
    with pytest.raises(ValueError, match="depth"):
        tasks.generate("passkey", tok, 256, 1.5, 0)
    with pytest.raises(ValueError, match="pool"):
        tasks.generate("needle", tok, 256, 0.5, 0)
    with pytest.raises(ValueError, match="one of"):
        tasks.generate("nope", tok, 256, 0.5, 0)
    with pytest.raises(ValueError, match="split"):
        tasks.generate("passkey", tok, 256, 0.5, 0, "dev")


def test_training_examples_use_training_seeds(setup):
    tok, _, train_pool = setup
    ex = tasks.training_example("needle", tok, 300, random.Random(0), train_pool)
    assert ex.length <= 300 and ex.meta["task"] == "needle"


@pytest.mark.parametrize("name", list(tasks.TASKS))
def test_any_length_is_exact_or_refused_clearly(setup, name):
    """Training rows ask for random lengths: every task either fits the length exactly or says
    it is too short (ValueError), never overshoots."""
    tok, _, pool = setup
    rng = random.Random(0)
    made = 0
    for seed in range(60):
        length = rng.randint(40, 400)
        try:
            ex = tasks.generate(name, tok, length, rng.random(), seed, "train", pool)
        except ValueError as err:
            assert "too short" in str(err)
            continue
        assert ex.length == length
        made += 1
    assert made >= 20


def test_missing_chunk_answer_is_the_cut_text(setup):
    """UL2-style fill-in: the text around the mark plus the answer rebuild a stretch of the pool's
    text, and the gap moves with depth."""
    tok, _, pool = setup
    where = []
    for depth in (0.1, 0.9):
        ex = tasks.generate("missing_chunk", tok, 400, depth, 2, "train", pool)
        text = tok.decode(ex.prompt_ids, skip_special_tokens=True)
        before, after = text.split(" [MISSING]")
        after = after.split("\n\nThe missing text:")[0]
        squash = lambda x: "".join(x.split())  # noqa: E731
        hay = squash(tok.decode(pool.span(400, tasks._rng(2, "train", "hay"))))
        assert squash(before[-40:] + ex.answer + after[:40]) in hay
        where.append(len(before) / len(text))
    assert where[0] < 0.3 < 0.7 < where[1]
    assert "missing_chunk" not in tasks.PROBES and "passkey" in tasks.PROBES


@pytest.mark.parametrize("family", tasks.LONG_QA_FAMILIES)
def test_long_qa_conversations_answer_from_their_context(tiny, family):
    """Llama-3 80K's families (one generator each, :data:`lcx.tasks.LONG_QA`), checked against
    the context each conversation carries."""
    tok, t = tiny
    domain = {"multi_detail_heterogeneous": "code", "biography": "books"}.get(family)
    have = set(t["train"]["domain"])
    pool = tasks.Pool.from_tokens(tok, t["train"], domains=[domain] if domain in have else None)
    seen = set()
    for seed in range(4):
        conv = tasks.LONG_QA[family](tok, 1500, seed, "train", pool)
        assert conv == tasks.long_qa(tok, 1500, seed, "train", pool, family)
        assert conv.meta["family"] == family
        assert 0.8 * 1500 <= conv.length <= 1500 and conv.context_ids[0] == tok.bos_token_id
        text = tok.decode(conv.context_ids, skip_special_tokens=True)
        questions = [tok.decode(q) for q, _ in conv.turns]
        assert [tok.decode(a).strip() for _, a in conv.turns] == conv.answers
        seen.add(tuple(conv.answers))
        for q, a in zip(questions, conv.answers, strict=True):
            if family == "single_detail":
                name = q.split(" of ")[1].split("?")[0]
                assert text.count(f" of {name} is ") == 1 and f" of {name} is {a}." in text
                assert a in tasks.CITIES
            elif family == "multi_detail_homogeneous":
                value = q.split(" is ")[1].split("?")[0]
                names = [n for n in a.split(", ")]
                said = re.findall(rf"of (\w+) is {value}\.", text)
                assert said == names and len(names) >= 2
                # 2 turns + 2 people share the turns' values (3 turns: 8 statements)
                assert len(re.findall(r" of [A-Z]\w+ is [A-Z]\w+\.", text)) == 8
            elif family == "multi_detail_heterogeneous":
                name = q.split(" of ")[1].split("?")[0]
                docs = re.split(r"Document \[\d+\]: ", text)[1:]
                holding = [i + 1 for i, d in enumerate(docs) if f" of {name} is " in d]
                assert a == f"Documents [{holding[0]}] and [{holding[1]}]." and len(holding) == 2
            else:
                name = q.split("biography of ")[1].split(":")[0]
                quotes = conv.meta["quotes"]
                assert all(x in text and re.search(rf"\b{name}\b", x) for x in quotes)
                assert " ".join(quotes).startswith(a) and len(a.split()) >= 4
    # every seed a different conversation (the tiny pool has few books to choose a character from)
    assert len(seen) >= (2 if family == "biography" else 4)
    with pytest.raises(ValueError, match="family"):
        tasks.long_qa(tok, 1500, 0, "train", pool, "gossip")


def test_single_detail_statements_spread_over_the_text(setup):
    """Each fact is stated where its turn's share of the text is: the j-th of n statements in
    [j/n, (j+1)/n) of the context, up to the distance to a sentence boundary (sparse in code)."""
    tok, _, pool = setup
    enc = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    head = 1 + len(enc("Read the text below and answer the questions after it.\n\n"))
    for seed in range(8):
        conv = tasks.single_detail(tok, 2000, seed, "train", pool, turns=4)
        body = conv.context_ids[head:]
        for j, (q, a) in enumerate(conv.turns):
            attr, name = tok.decode(q).split("What is the ")[1].split("?")[0].split(" of ")
            stated = enc(f" The {attr} of {name} is {tok.decode(a).strip()}.")
            at = _find(body, stated) / len(body)
            assert j / 4 - 0.2 <= at <= (j + 1) / 4 + 0.2, (seed, j, at)


@pytest.mark.parametrize(
    "text, title",
    [
        (
            "NAME\nls - list directory contents\n\nSYNOPSIS\nls [OPTION]...",
            "ls - list directory contents",
        ),
        (
            "=head1 NAME\n\nperl - The Perl 5 language interpreter\n\n=head1 SYNOPSIS",
            "perl - The Perl 5 language interpreter",
        ),
        (
            "=encoding utf8\n\n=head1 NAME\n\nperldebtut - Perl debugging tutorial\n\nA tutorial.",
            "perldebtut - Perl debugging tutorial",
        ),
        (
            ".. highlight:: c\n\n.. _setobjects:\n\nSet Objects\n-----------\n\nThis section",
            "Set Objects",
        ),
        ("Chapter 1\n\nThe song of songs", "Chapter 1"),
        ("# The Jargon File\n\n(version 4.4.7)", "The Jargon File"),
    ],
)
def test_title_line_skips_markup_and_name_headers(text, title):
    got, rest = tasks.title_line(text)
    assert got == title
    assert title not in rest and rest.strip()  # the title is cut out of what the model reads


def test_summary_of_a_man_page_asks_for_its_name_line(setup):
    """Man pages open with a NAME header: the target is the line under it, and it is cut out."""
    tok = setup[0]
    body = " ".join(f"The tool reads option {k} and writes a report." for k in range(60))
    docs = [
        tok(f"NAME\ntool{i} - report on item {i}\n\nDESCRIPTION\n{body}")["input_ids"]
        for i in range(5)
    ]
    pool = tasks.Pool(tok, docs)
    for seed in range(5):
        ex = tasks.generate("summary", tok, 256, None, seed, "test", pool)
        assert re.fullmatch(r"tool\d - report on item \d", ex.answer), ex.answer
        assert "report on item" not in tok.decode(ex.prompt_ids)


def test_json_kv_fits_its_length_when_the_asked_pair_outgrows_the_probe():
    """The budget is set by a probe of zeros; with a tokenizer that merges zeros but not hex
    letters (a small BPE; Llama 3 groups digits in threes) the asked key and value can take more
    tokens than the probe: the example still has exactly its length, the asked key in the JSON."""
    from lcx import standins

    tok = standins.tokenizer("llama3", ["00000000 0000 00 " * 300] * 4, vocab_size=300)
    assert len(tok("00000000", add_special_tokens=False)["input_ids"]) < 4  # zeros merge
    for length in (256, 300, 384):
        for depth in (0.0, 0.5, 1.0):
            for seed in range(3):
                ex = tasks.generate("json_kv", tok, length, depth, seed, "test", None)
                assert len(ex.prompt_ids) + len(ex.answer_ids) == length
                text = tok.decode(ex.prompt_ids, skip_special_tokens=True)
                obj = json.loads(text.split("JSON data:\n")[1].split("\n\nWhat")[0])
                assert obj[text.split("value of key ")[1].split("?")[0]] == ex.answer


def test_a_pool_too_large_for_memory_reads_documents_one_at_a_time_and_makes_the_same_text(
    tiny, monkeypatch
):
    """At paper scale (PG-19's books: ~2B tokens) a pool holds no document lists: it reads one
    document at a time from the memory-mapped split, never a column whole, pickles without its
    text, and every task and long-QA family makes the same examples from it as from lists."""
    import pickle

    import datasets

    tok, t = tiny
    split = t["train"]
    assert tasks.in_memory(split)
    listed = tasks.Pool.from_tokens(tok, split)
    monkeypatch.setattr(tasks, "IN_MEMORY_TOKENS", 0)
    assert not tasks.in_memory(split) and tasks.in_memory({"input_ids": [], "domain": []})
    real = datasets.Dataset.__getitem__

    def no_whole_column(self, key):
        if key == "input_ids":
            raise AssertionError("the pool read the input_ids column whole")
        return real(self, key)

    monkeypatch.setattr(datasets.Dataset, "__getitem__", no_whole_column)
    lazy = tasks.Pool.from_tokens(tok, split)
    assert isinstance(lazy.docs, tasks.Documents) and lazy.lengths == listed.lengths
    assert len(pickle.dumps(lazy)) < len(pickle.dumps(listed)) / 4
    assert lazy.classes() == listed.classes()
    for name, task in tasks.TASKS.items():
        if not task.needs_pool:
            continue
        for seed in range(2):
            a = tasks.generate(name, tok, 1000, 0.5, seed, "train", listed)
            b = tasks.generate(name, tok, 1000, 0.5, seed, "train", lazy)
            assert (a.prompt_ids, a.answer_ids) == (b.prompt_ids, b.answer_ids), name
    for family in tasks.LONG_QA_FAMILIES:
        a = tasks.long_qa(tok, 1500, 1, "train", listed, family)
        assert a == tasks.long_qa(tok, 1500, 1, "train", lazy, family), family
