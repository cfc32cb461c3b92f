"""Training rows against what the papers' data recipes say: packed documents that stay apart,
format rows with up-weighted answers, SFT rows with the loss on responses (or on inputs too),
chat rows, ProLong's long/short rows and synthetic long data, mixes by share."""

import dataclasses
import random

import pytest
import torch

from lcx import rows as row_builders
from lcx import tasks, train


def test_packed_rows_respect_documents_and_mixture(tiny):
    tok, t = tiny
    recipe = train.Recipe(
        seq_len=128,
        tokens=1,
        batch_tokens=128,
        lr=1e-3,
        mixture={"code": 1.0, "books": 1.0},
        min_doc_tokens=1000,
        formats={"passkey": 0.25},
    )
    rows = row_builders.packed_rows(t["train"], recipe, tok.bos_token_id, 200, tok)
    bos = tok.bos_token_id
    for row in rows:
        ids, pos, labels = row["input_ids"], row["position_ids"], row["labels"]
        assert ids.shape == pos.shape == labels.shape == (128,)
        starts = (pos == 0).nonzero().flatten()
        for s in starts[
            1:
        ]:  # every document after the first starts with BOS, position 0, no target
            assert ids[s] == bos and labels[s] == row_builders.IGNORE
    n_passkey = sum(int((r["loss_weights"] > 1).any()) for r in rows)
    assert 30 <= n_passkey <= 70  # ~25% of 200
    with pytest.raises(ValueError, match="no training documents"):
        row_builders.packed_rows(
            t["train"],
            train.Recipe(seq_len=128, tokens=1, batch_tokens=128, lr=1e-3, mixture={"books": 1.0}),
            bos,
            1,
            tok,
        )


def test_sft_rows_mask_prompts_unless_asked():
    examples = [([1, 5, 6, 7], [8, 9]), ([1, 3], [4, 4, 4]), ([1] * 30, [2] * 30)]
    rows = row_builders.sft_rows(examples, seq_len=12, pad_id=0)
    assert len(rows) == 1  # the third example is too long and dropped; the first two share a row
    r = rows[0]
    assert r["input_ids"][:11].tolist() == [1, 5, 6, 7, 8, 9, 1, 3, 4, 4, 4]
    assert r["position_ids"][:11].tolist() == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4]
    assert r["loss_weights"][:11].tolist() == [0, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1]
    assert (
        r["labels"][0] == row_builders.IGNORE
        and r["labels"][6] == row_builders.IGNORE
        and r["labels"][11] == row_builders.IGNORE
    )
    with_inputs = row_builders.sft_rows(examples, seq_len=12, pad_id=0, loss_on_inputs=True)[0]
    assert with_inputs["loss_weights"][:11].tolist() == [1.0] * 11


def test_sft_rows_train_on_every_turn_of_a_conversation():
    conversation = [([1, 5, 6], [7, 8]), ([3], [9])]  # context + question, answer; question, answer
    (r,) = row_builders.sft_rows([conversation, ([1, 2], [4])], seq_len=12, pad_id=0)
    assert r["input_ids"][:10].tolist() == [1, 5, 6, 7, 8, 3, 9, 1, 2, 4]
    assert r["position_ids"][:10].tolist() == [0, 1, 2, 3, 4, 5, 6, 0, 1, 2]
    assert r["loss_weights"][:10].tolist() == [0, 0, 0, 1, 1, 0, 1, 0, 0, 1]
    assert r["labels"][:10].tolist() == [
        row_builders.IGNORE,
        5,
        6,
        7,
        8,
        3,
        9,
        row_builders.IGNORE,
        2,
        4,
    ]


def test_chat_rows_are_short_multi_turn_and_single_turn_instructions(tiny):
    tok, t = tiny
    pool = tasks.Pool.from_tokens(tok, t["train"])
    rows = row_builders.chat_rows(
        tok, 4, 768, 0, pool, (160, 255), task_names=("json_kv", "doc_qa")
    )
    assert len(rows) == 4
    for r in rows:
        pos = r["position_ids"].tolist()
        starts = [i for i, p in enumerate(pos) if p == 0]
        real = int((r["input_ids"] != tok.pad_token_id).sum())
        docs = [b - a for a, b in zip(starts, [*starts[1:], len(pos)], strict=True)]
        assert len(docs) >= 3 and max(docs[:-1]) <= 255  # several short examples per row
        assert 0 < r["loss_weights"].sum() < real / 2  # the loss is on responses only
    # the conversations answer several questions: more answer spans than examples
    w = rows[0]["loss_weights"].tolist()
    spans = sum(1 for i in range(1, len(w)) if w[i] == 1 and w[i - 1] == 0)
    starts = sum(1 for p in rows[0]["position_ids"].tolist() if p == 0)
    assert spans > starts - 1
    with pytest.raises(ValueError):
        row_builders.chat_rows(tok, 1, 128, 0, pool, (64, 200))


def test_synthetic_long_rows_follow_prolong_shares(tiny, monkeypatch):
    tok, t = tiny
    pool = tasks.Pool.from_tokens(tok, t["train"])
    made = []
    real = row_builders.task_sft_rows

    def spy(task, *a, **k):
        rows = real(task, *a, **k)
        made.append((task, len(rows)))
        return rows

    monkeypatch.setattr(row_builders, "task_sft_rows", spy)
    rows = row_builders.synthetic_long_rows(tok, 10, 512, 0, pool, (256, 511))
    assert len(rows) == 10 and dict(made) == {"self_instruct": 4, "multidoc_qa": 3, "summary": 3}


def test_long_short_rows_take_long_rows_from_long_documents_only():
    # code documents of token 7 (long enough for a row) and token 5 (too short: never long data),
    # short documents of token 9
    docs = {
        "input_ids": [[7] * 300] * 3 + [[5] * 100] * 3 + [[9] * 20] * 30,
        "domain": ["code"] * 6 + ["short"] * 30,
    }
    recipe = train.Recipe(seq_len=128, tokens=128 * 4 * 5, batch_tokens=128 * 4, lr=1e-3)
    rows = row_builders.long_short_rows(docs, recipe, 0.6, 20, 1, {"code": 1.0}, {"short": 1.0})
    content = [set(r["input_ids"].tolist()) - {1} for r in rows]
    assert len(rows) == 20 and content.count({7}) == 12 and content.count({9}) == 8
    short = [r for r, c in zip(rows, content, strict=True) if c == {9}]
    assert all((r["position_ids"] == 0).sum() >= 6 for r in short)  # packed, document-masked
    assert [
        set(r["input_ids"].tolist()) - {1}
        for r in row_builders.long_short_rows(
            docs, recipe, 0.0, 5, 1, {"code": 1.0}, {"short": 1.0}
        )
    ] == [{9}] * 5
    with pytest.raises(ValueError, match="long_share"):
        row_builders.long_short_rows(docs, recipe, 1.5, 4, 1, {"code": 1.0}, {"short": 1.0})


def test_share_counts_sum_exactly_and_follow_the_shares():
    counts = row_builders.share_counts({"long QA": 3.5, "short LM": 5.0, "instructions": 12.0}, 112)
    assert sum(counts.values()) == 112
    for k, share in {"long QA": 3.5, "short LM": 5.0, "instructions": 12.0}.items():
        assert abs(counts[k] - 112 * share / 20.5) < 1
    assert row_builders.share_counts({"a": 1, "b": 1, "c": 1}, 2) in (
        {"a": 1, "b": 1, "c": 0},
        {"a": 1, "b": 0, "c": 1},
        {"a": 0, "b": 1, "c": 1},
    )
    assert row_builders.share_counts({"long": 0.0, "short": 1.0}, 5) == {"long": 0, "short": 5}
    for bad in ({}, {"a": -1.0, "b": 2.0}, {"a": 0.0}):
        with pytest.raises(ValueError):
            row_builders.share_counts(bad, 4)


def test_mix_rows_makes_each_part_by_its_share_and_shuffles_by_seed():
    asked = {}

    def part(name):
        def make(n):
            asked[name] = n
            return [{"part": name, "i": i} for i in range(n)]

        return make

    parts = {"long": (0.6, part("long")), "short": (0.4, part("short"))}
    rows = row_builders.mix_rows(parts, 50, seed=1)
    assert asked == {"long": 30, "short": 20} and len(rows) == 50
    assert sorted((r["part"], r["i"]) for r in rows) == sorted(
        [("long", i) for i in range(30)] + [("short", i) for i in range(20)]
    )
    assert rows != sorted(rows, key=lambda r: (r["part"], r["i"]))  # shuffled
    assert (
        rows == row_builders.mix_rows(parts, 50, seed=1) != row_builders.mix_rows(parts, 50, seed=2)
    )
    with pytest.raises(ValueError, match="made 29"):
        row_builders.mix_rows({"long": (1.0, lambda n: [{}] * (n - 1))}, 30, seed=0)


def test_packed_format_rows_hold_several_examples(tiny):
    """Together's phase 2: several task examples per row, each from its own BOS, answers
    up-weighted, nothing past the row; and plain format rows hold one example."""
    tok, t = tiny
    kw = dict(seq_len=512, tokens=512 * 8, batch_tokens=512, lr=1e-3, formats={"passkey": 1.0})
    packed = row_builders.packed_rows(
        t["train"], train.Recipe(**kw, pack_formats=True), tok.bos_token_id, 8, tok
    )
    single = row_builders.packed_rows(t["train"], train.Recipe(**kw), tok.bos_token_id, 8, tok)
    for rows, lo, hi in ((packed, 2, 8), (single, 1, 1)):
        for r in rows:
            n_examples = int((r["input_ids"] == tok.bos_token_id).sum())
            assert lo <= n_examples <= hi
            answers = r["loss_weights"] > 1
            assert int(answers.sum()) == 6 * n_examples  # " " + 5 digits per example
            assert (r["labels"][r["loss_weights"] == 0] == row_builders.IGNORE).all()


def test_task_sft_rows_train_only_on_answers(tiny):
    """Fine-tuning rows of a task: n rows of seq_len, loss weight only on answer tokens, and each
    answer-weighted span decodes to a passkey (digits)."""
    tok, _ = tiny
    rows = row_builders.task_sft_rows("passkey", tok, 3, 256, seed=0)
    assert len(rows) == 3 and all(r["input_ids"].shape == (256,) for r in rows)
    for r in rows:
        answer = r["input_ids"][r["loss_weights"] > 0]
        assert len(answer) > 0 and tok.decode(answer).replace(" ", "").isdigit()
        assert (r["labels"][r["loss_weights"] == 0] != row_builders.IGNORE).sum() < len(r["labels"])


def test_task_sft_rows_lengths_and_loss_on_inputs(tiny):
    """Short examples pack several to a row; with loss_on_inputs every real token but each
    example's first is a target with weight 1 (Llama 2 Long Table 9's "with LM loss")."""
    tok, _ = tiny
    short = row_builders.task_sft_rows("passkey", tok, 2, 512, seed=1, lengths=(100, 120))
    starts = [int((r["position_ids"] == 0).sum()) for r in short]
    assert min(starts) >= 4  # >= 4 examples of <= 120 tokens in 512 (+ the padding run)
    lm = row_builders.task_sft_rows(
        "passkey", tok, 2, 512, seed=1, lengths=(100, 120), loss_on_inputs=True
    )
    for a, b in zip(short, lm, strict=True):
        assert torch.equal(a["input_ids"], b["input_ids"])  # same examples, only the weights differ
        real = b["labels"] != row_builders.IGNORE
        assert (b["loss_weights"][real] == 1).all() and (a["loss_weights"][real] < 1).any()
        assert torch.equal(a["loss_weights"] > 0, (a["loss_weights"] > 0) & real)
    with pytest.raises(ValueError, match="lengths"):
        row_builders.task_sft_rows("passkey", tok, 1, 256, seed=0, lengths=(100, 256))


def test_conversation_rows_train_on_every_answer_and_nothing_else(tiny):
    tok, t = tiny
    pool = tasks.Pool.from_tokens(tok, t["train"])
    convs = [tasks.long_qa(tok, 900, s, "train", pool, "single_detail", turns=3) for s in range(2)]
    rows = row_builders.conversation_rows(convs, 1024, tok.pad_token_id)
    assert len(rows) == 2
    for conv, row in zip(convs, rows, strict=True):
        trained = row["input_ids"][row["loss_weights"] > 0].tolist()
        assert trained == [i for _, a in conv.turns for i in a]  # the answers, in order
        assert torch.equal(
            row["labels"][row["loss_weights"] > 0], row["input_ids"][row["loss_weights"] > 0]
        )
        assert (row["labels"][row["loss_weights"] == 0] == row_builders.IGNORE).all()
    assert row_builders.conversation_rows(convs, 600, tok.pad_token_id) == []  # too long: dropped


def test_chat_template_rows_train_on_every_assistant_message(tiny, monkeypatch):
    """UltraChat-style messages through a chat template: the loss covers exactly the assistant
    messages' tokens (and the template's end-of-turn markup after them), nothing the user wrote."""
    tok, _ = tiny
    monkeypatch.setattr(
        tok,
        "chat_template",
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}",
    )
    chat = [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Italy?"},
        {"role": "assistant", "content": "Rome."},
    ]
    (row,) = row_builders.chat_template_rows(iter([chat, chat]), tok, 1, 256)
    ids, w = row["input_ids"].tolist(), row["loss_weights"].tolist()
    rendered = tok.apply_chat_template(chat, tokenize=True)
    rendered = list(rendered["input_ids"] if hasattr(rendered, "keys") else rendered)
    n = len(rendered)
    assert ids[:n] == rendered and ids[n : 2 * n] == rendered  # two conversations packed
    trained = tok.decode([t for t, x in zip(ids[:n], w[:n], strict=True) if x == 1])
    assert "Paris." in trained and "Rome." in trained
    assert "France" not in trained and "Italy" not in trained and "user" not in trained
    with pytest.raises(ValueError, match="filled"):
        row_builders.chat_template_rows(iter([chat]), tok, 3, 256)


def test_at_window_keeps_every_token_label_and_weight_in_order():
    """Rows whose positions run on (Together's, no document masking): pieces at 0..W-1."""
    rows = [
        {
            "input_ids": torch.arange(16) + 100 * r,
            "position_ids": torch.arange(16),
            "labels": torch.arange(16) + 100 * r,
            "loss_weights": torch.linspace(0, 1, 16),
        }
        for r in range(3)
    ]
    pieces = row_builders.at_window(rows, 4)
    assert len(pieces) == 12
    for key in ("input_ids", "labels", "loss_weights"):
        assert torch.equal(torch.cat([p[key] for p in pieces]), torch.cat([r[key] for r in rows]))
    assert all(p["position_ids"].tolist() == [0, 1, 2, 3] for p in pieces)
    assert rows[0]["position_ids"].tolist() == list(range(16))  # the input rows are untouched
    with pytest.raises(ValueError, match="does not cut"):
        row_builders.at_window(rows, 5)


def test_at_window_restarts_positions_where_documents_start():
    """A row of three packed documents (5, 7, 4 tokens) cut into pieces of 4: the same tokens,
    labels and weights in order; each piece's positions start at 0 and restart where a document
    starts (by hand)."""
    pos = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3])
    row = {
        "input_ids": torch.arange(100, 116),
        "position_ids": pos,
        "labels": torch.arange(200, 216),
        "loss_weights": torch.linspace(0, 1, 16),
    }
    pieces = row_builders.at_window([row], 4)
    assert len(pieces) == 4
    for key in ("input_ids", "labels", "loss_weights"):
        assert torch.equal(torch.cat([p[key] for p in pieces]), row[key])
    want = [[0, 1, 2, 3], [0, 0, 1, 2], [0, 1, 2, 3], [0, 1, 2, 3]]
    assert [p["position_ids"].tolist() for p in pieces] == want
    with pytest.raises(ValueError):
        row_builders.at_window([row], 5)


def _same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
        for x, y in zip(a, b, strict=True)
    )


def test_a_row_stream_makes_the_lists_rows_without_reading_the_split_whole(tiny, monkeypatch):
    """Rows made as they are read (paper scale) are the rows of the list a run makes in memory,
    packed with formats or ProLong's long/short mix, whether the split is a memory-mapped Dataset
    (read a document at a time: never whole) or lists in memory; every pass makes them again."""
    import datasets

    tok, t = tiny
    split = t["train"]
    in_memory = split.select_columns(["input_ids", "domain"]).to_dict()
    recipe = train.Recipe(
        seq_len=128, tokens=1, batch_tokens=128, lr=1e-3, formats={"passkey": 0.2}, seed=3
    )
    bos = tok.bos_token_id
    mix = {"long_share": 0.5, "long_mixture": {"code": 1.0}, "short_mixture": {"short": 1.0}}
    as_list = {
        "packed": row_builders.packed_rows(in_memory, recipe, bos, 30, tok),
        "long/short": row_builders.long_short_rows(
            in_memory, recipe, 0.5, 30, bos, mix["long_mixture"], mix["short_mixture"], tok
        ),
    }

    def whole(*a, **k):
        raise AssertionError("the stream read the whole split")

    monkeypatch.setattr(datasets.Dataset, "to_dict", whole)
    for kind, long_short in (("packed", None), ("long/short", mix)):
        stream = row_builders.RowStream(split, recipe, bos, 30, tok, long_short)
        assert len(stream) == 30
        assert _same(list(stream), as_list[kind]) and _same(list(stream), as_list[kind])
        assert _same(list(row_builders.RowStream(in_memory, recipe, bos, 30, tok, long_short)),
                     as_list[kind])  # fmt: skip


def test_a_row_streams_key_is_what_makes_it(tiny):
    tok, t = tiny
    recipe = train.Recipe(seq_len=128, tokens=1, batch_tokens=128, lr=1e-3)
    key = row_builders.rows_key(row_builders.RowStream(t["train"], recipe, tok.bos_token_id, 10))
    same = row_builders.RowStream(t["train"], recipe, tok.bos_token_id, 10)
    assert row_builders.rows_key(same) == key
    other = row_builders.RowStream(t["train"], dataclasses.replace(recipe, seed=1), 1, 10)
    assert row_builders.rows_key(other) != key
    assert row_builders.rows_key(row_builders.RowStream(t["train"], recipe, 1, 11)) != key


def _chat_template(tok, monkeypatch):
    monkeypatch.setattr(
        tok,
        "chat_template",
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}",
    )
    return [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ]


def test_row_generators_make_rows_one_at_a_time_from_endless_sources(tiny, monkeypatch):
    """Paper-scale SFT data (a billion tokens) is made as it is read: asking a generator for rows
    of a run of 10^9 rows, or over an endless stream of conversations, returns its first rows at
    once, and they are the first rows of a small list built the same way."""
    import itertools

    tok, t = tiny
    pool = tasks.Pool.from_tokens(tok, t["train"])
    huge = row_builders.iter_task_sft_rows("doc_qa", tok, 10**9, 512, 3, pool)
    first = list(itertools.islice(huge, 3))
    small = row_builders.task_sft_rows("doc_qa", tok, 3, 512, 3, pool)
    assert _same(first, small)
    chat = _chat_template(tok, monkeypatch)
    endless = row_builders.iter_chat_template_rows(itertools.repeat(chat), tok, 10**9, 256)
    rows = list(itertools.islice(endless, 2))
    assert len(rows) == 2 and all(len(r["input_ids"]) == 256 for r in rows)
    # a function that returns the stream (what pickles: data.ultrachat) reads the same
    again = row_builders.iter_chat_template_rows(lambda: itertools.repeat(chat), tok, 2, 256)
    assert _same(list(again), rows)


def test_a_stream_makes_its_rows_again_each_pass_pickles_and_checks_its_count(tiny):
    """What a launched run sends its ranks: the same rows on every pass and after pickling; a
    maker that runs short or makes rows of another length fails loudly."""
    import functools
    import pickle

    tok, t = tiny
    pool = tasks.Pool.from_tokens(tok, t["train"])
    spec = ["tiny", "doc_qa", 3]
    stream = row_builders.Stream(
        4, 512, spec, row_builders.iter_task_sft_rows, "doc_qa", tok, 4, 512, 3, pool
    )
    rows = list(stream)
    assert len(stream) == 4 and len(rows) == 4 and _same(list(stream), rows)
    back = pickle.loads(pickle.dumps(stream))
    assert _same(list(back), rows) and back.key() == stream.key()
    assert _same(rows, row_builders.task_sft_rows("doc_qa", tok, 4, 512, 3, pool))
    short = row_builders.Stream(
        5, 512, spec, row_builders.iter_task_sft_rows, "doc_qa", tok, 4, 512, 3, pool
    )
    with pytest.raises(ValueError, match="made 4 rows, not 5"):
        list(short)
    wrong = row_builders.Stream(
        4, 256, spec, row_builders.iter_task_sft_rows, "doc_qa", tok, 4, 512, 3, pool
    )
    with pytest.raises(ValueError, match="not 256"):
        list(wrong)
    # partials of module-level makers pickle too (the mixes' parts)
    part = functools.partial(
        row_builders.iter_task_sft_rows, "doc_qa", tok, seq_len=512, seed=3, pool=pool
    )
    mixed = row_builders.Stream(4, 512, spec, row_builders.iter_mix, {"qa": (1, part)}, 4, 0)
    assert _same(list(pickle.loads(pickle.dumps(mixed))), list(mixed))


def test_a_streams_key_is_what_makes_it_and_what_its_spec_names(tiny):
    """A stream's key (its run's cache key) changes with its spec, count, length, maker, the
    numbers and functions in its arguments (a mix's shares and parts, a partial's keywords) and
    their code; objects it cannot hash (a tokenizer, a pool, a split) are the spec's to name."""
    import copy
    import functools

    tok, _ = tiny
    make = row_builders.iter_task_sft_rows

    def key(*a):
        return row_builders.rows_key(row_builders.Stream(*a))

    base = key(2, 64, ["a", 1], make, "doc_qa", tok, 2, 64, 0)
    assert key(2, 64, ["a", 1], make, "doc_qa", copy.deepcopy(tok), 2, 64, 0) == base
    assert key(2, 64, ["a", 2], make, "doc_qa", tok, 2, 64, 0) != base
    assert key(3, 64, ["a", 1], make, "doc_qa", tok, 2, 64, 0) != base
    assert key(2, 32, ["a", 1], make, "doc_qa", tok, 2, 64, 0) != base
    assert key(2, 64, ["a", 1], make, "doc_qa", tok, 2, 64, 1) != base  # the seed
    assert key(2, 64, ["a", 1], row_builders.iter_sft_rows, [], 64, 0) != base

    def mix(share, task="doc_qa", seed=0):
        part = functools.partial(make, task, tok, seq_len=64, seed=seed)
        return key(2, 64, ["m"], row_builders.iter_mix, {"a": (share, part)}, 2, 0)

    assert mix(1) == mix(1) != mix(2)
    assert mix(1, task="json_kv") != mix(1) != mix(1, seed=1)


def test_a_mix_made_as_read_has_the_list_mixs_parts_and_counts_in_a_seeded_order():
    def part(name):
        def make(n):
            return iter([{"part": name, "i": i} for i in range(n)])

        return make

    parts = {"long": (0.6, part("long")), "short": (0.4, part("short"))}
    rows = list(row_builders.iter_mix(parts, 50, seed=1))
    as_lists = {k: (share, lambda n, m=m: list(m(n))) for k, (share, m) in parts.items()}
    listed = row_builders.mix_rows(as_lists, 50, 1)
    key = lambda r: (r["part"], r["i"])  # noqa: E731
    assert sorted(rows, key=key) == sorted(listed, key=key)  # the same rows, counts by share
    for name in ("long", "short"):  # each part's rows in the order it makes them
        assert [r["i"] for r in rows if r["part"] == name] == sorted(
            r["i"] for r in rows if r["part"] == name
        )
    labels = [r["part"] for r in rows]
    assert labels != sorted(labels) and labels != sorted(labels, reverse=True)  # interleaved
    assert rows == list(row_builders.iter_mix(parts, 50, seed=1))
    assert rows != list(row_builders.iter_mix(parts, 50, seed=2))
    short = {"long": (1.0, lambda n: iter([{}] * (n - 1)))}
    with pytest.raises(ValueError, match="fewer rows"):
        list(row_builders.iter_mix(short, 30, seed=0))
    for stream in (False, True):  # with a row's length, as a stream checks it
        sized = {
            k: (share, lambda n, m=m: ({**r, "input_ids": [0]} for r in m(n)))
            for k, (share, m) in parts.items()
        }
        made = row_builders.mixed(sized, 50, 1, stream, 1, ["x"])
        assert sorted(map(key, made)) == sorted(map(key, listed))
        assert isinstance(made, row_builders.Stream) == stream


def test_a_stream_cut_at_the_window_is_the_list_cut_at_the_window(tiny):
    """The native-window controls at paper scale (T2, Q4): a stream of long rows cut into
    ``W``-token rows is, row for row, the list of those rows cut by :func:`at_window`."""
    tok, t = tiny
    recipe = train.Recipe(seq_len=512, tokens=1, batch_tokens=512, lr=1e-3, seed=2)
    stream = row_builders.RowStream(t["train"], recipe, tok.bos_token_id, 6, tok)
    cut = row_builders.at_window(stream, 128)
    assert isinstance(cut, row_builders.Stream) and len(cut) == 24
    listed = row_builders.at_window(list(stream), 128)
    assert _same(list(cut), listed)
    twice = row_builders.at_window(cut, 64)
    assert len(twice) == 48 and _same(list(twice), row_builders.at_window(listed, 64))
    assert row_builders.rows_key(cut) != row_builders.rows_key(twice)
    with pytest.raises(ValueError, match="does not cut"):
        row_builders.at_window(stream, 100)


class _CountedReads(dict):
    """A split in memory (a dict of lists) that counts the documents read from it."""

    def __init__(self, split: dict):
        super().__init__(split)
        self.read = []
        ids = split["input_ids"]
        counted = type(
            "Counted", (list,), {"__getitem__": lambda s, i: self.read.append(i) or ids[i]}
        )
        self["input_ids"] = counted(ids)


def test_a_resumed_stream_makes_the_rows_from_its_start_and_reads_none_before(tiny):
    """A run resumed after ``k`` rows reads ``stream.resumed(k)``: the rows ``k`` on of the whole
    stream, packed (with format rows), long/short, cut at the window or SFT; a packed stream
    reads no document that only the rows before ``k`` hold (the Trainer's own skip makes every
    row it skips: hours at paper scale)."""
    tok, t = tiny
    bos = tok.bos_token_id
    recipe = train.Recipe(
        seq_len=128, tokens=1, batch_tokens=128, lr=1e-3, formats={"passkey": 0.2}, seed=3
    )
    mix = {"long_share": 0.5, "long_mixture": {"code": 1.0}, "short_mixture": {"short": 1.0}}
    for long_short in (None, mix):
        stream = row_builders.RowStream(t["train"], recipe, bos, 30, tok, long_short)
        whole = list(stream)
        for k in (0, 1, 17, 30):
            again = stream.resumed(k)
            assert len(again) == 30 and _same(list(again), whole[k:])
        assert _same(list(stream), whole)  # the stream itself still starts at 0
    pool = tasks.Pool.from_tokens(tok, t["train"])
    sft = row_builders.Stream(
        5, 512, ["s"], row_builders.iter_task_sft_rows, "doc_qa", tok, 5, 512, 3, pool
    )
    long = row_builders.RowStream(t["train"], dataclasses.replace(recipe, seq_len=512), bos, 6, tok)
    for stream in (sft, row_builders.at_window(long, 128)):
        whole = list(stream)
        for k in (2, 5, len(stream)):
            assert _same(list(stream.resumed(k)), whole[k:])
    with pytest.raises(ValueError, match="starts in"):
        long.resumed(7)

    plain = dataclasses.replace(recipe, formats={})
    rng = random.Random(0)  # short documents, ~36 to the first 30 rows
    short = {
        "input_ids": [[rng.randrange(5, 99) for _ in range(rng.randrange(20, 200))] for _ in range(300)],
        "domain": [("code", "books", "prose")[i % 3] for i in range(300)],
    }  # fmt: skip
    split = _CountedReads(short)
    list(row_builders.RowStream(split, plain, bos, 40))
    every, split.read = set(split.read), []
    list(row_builders.RowStream(split, plain, bos, 30))
    first = set(split.read)
    split.read = []
    assert _same(
        list(row_builders.RowStream(split, plain, bos, 40).resumed(30)),
        list(row_builders.RowStream(short, plain, bos, 40))[30:],
    )
    # what the 10 last rows read: the documents only they hold, and at most one document per
    # domain that the 30th row cut and the 31st goes on with
    assert every - first <= set(split.read) and len(set(split.read) - (every - first)) <= 3
