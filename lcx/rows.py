"""Training rows: what a training step reads, built from documents, task examples and conversations.

A row is one training sequence of ``seq_len`` tokens, a dict of four equal-length tensors:

* ``input_ids`` (int64): the tokens;
* ``position_ids`` (int64): where each token sits. They restart at 0 at every document packed into
  the row, which is how the attention keeps packed documents apart (document masking, ProLong
  §A.3; see :mod:`lcx.attention`), or run on across the row when documents may see each other;
* ``labels`` (int64): the target of each token, the token itself (the model shifts them by one),
  or :data:`IGNORE` where nothing is predicted (the padding, a document's first token);
* ``loss_weights`` (float32): what each target counts in the loss, 0 for no loss. The trainer
  (:class:`lcx.train.LcxTrainer`) averages the loss over the weights of a whole optimizer step.

The kinds of rows the papers train on:

* **Packed rows** (:func:`packed_rows`): continued pretraining on documents of a domain mixture
  packed back to back, cut where the row ends (Together, Llama 2 Long, ProLong), optionally with a
  share of task-format rows whose answer tokens are up-weighted (the tiny models only learn a
  probe's format when it is in their training mix). ProLong §3's long/short mix is
  :func:`long_short_rows`.
* **SFT rows** (:func:`sft_rows`): instruction examples (prompt, response) packed with document
  masking, the loss on the responses only, or on the inputs too (Llama 2 Long Table 9's "with LM
  loss"); :func:`task_sft_rows` makes them from :mod:`lcx.tasks`, :func:`conversation_rows` holds a
  multi-turn conversation over one context per row (Llama-3 80K).
* **Chat rows**: ProLong's short SFT data, short multi-turn chats in miniature (:func:`chat_rows`)
  or real conversations through a tokenizer's chat template (:func:`chat_template_rows`);
  :func:`synthetic_long_rows` is ProLong §5's synthetic long instruction data.
* **Mixes** (:func:`mix_rows`): a data recipe's parts in given shares (:func:`share_counts`),
  shuffled together, as Llama-3 80K's and ProLong's mixes are stated.

Rows handed to :func:`lcx.train.run` are hashed into the run's cache key (:func:`rows_key`).

**Streams.** At paper scale the rows do not fit in memory (ProLong's 5B tokens at 64K, Llama-3
80K's 20,000 rows of 80K: tens of GB), so the gpu/paper profiles hand the trainer rows made as it
reads them: :class:`RowStream` (packed and long/short rows from the tokenized split on disk) and
:class:`Stream` (any builder's ``iter_*`` generator: SFT, conversation, chat-template, windowed and
mixed rows). Each ``iter_*`` makes the rows of its list builder, in the same order, one at a time;
a mix made as it is read (:func:`iter_mix`) has the list mix's parts and counts but another order.
A run resumed from a checkpoint reads its stream from the checkpoint's row (``resumed``).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import inspect
import itertools
import random
from typing import TYPE_CHECKING

import torch

from . import attention, cache, tasks

if TYPE_CHECKING:  # a row builder reads a recipe's fields; lcx.train imports this module
    from .train import Recipe

IGNORE = -100  # a label that is not a target (the value transformers' losses skip)


# --- packed rows: continued pretraining on documents -----------------------------------------------


def _doc_order(indices: list[int], rng: random.Random):
    """One domain's documents (their ``indices``) in a shuffled order, forever."""
    order = list(indices)
    while True:
        rng.shuffle(order)
        yield from order


def _documents(tokens):
    """``(domains, lengths, get)`` of a split: each document's domain and token count, and a
    function reading one document's ids. A ``datasets.Dataset`` (memory-mapped) is read one
    document at a time, never whole; a dict of lists is read where it is."""
    if hasattr(tokens, "select_columns"):
        domains = tokens["domain"]
        if "n_tokens" in tokens.column_names:
            lengths = list(tokens["n_tokens"])
        else:
            lengths = [len(x) for x in tokens.select_columns(["input_ids"])["input_ids"]]
        ids = tokens.select_columns(["input_ids"])
        return domains, lengths, lambda i: ids[i]["input_ids"]
    return tokens["domain"], [len(x) for x in tokens["input_ids"]], tokens["input_ids"].__getitem__


def iter_packed_rows(tokens, recipe: Recipe, bos_id: int, tokenizer=None, start: int = 0):
    """:func:`packed_rows`' rows, one at a time and without end: what a run streams when its rows
    would not fit in memory (:class:`RowStream`). The same rows, in the same order, as
    :func:`packed_rows` makes a list of; from row ``start`` (a resumed run's): the rows before it
    are drawn as they would be but not made, a document row from the documents' lengths alone
    (none is read), a format row made and dropped (its example's draws decide the next rows')."""
    bad = [t for t in recipe.formats if t not in tasks.TASKS]
    if bad or sum(recipe.formats.values()) > 1:
        raise ValueError(
            f"formats={recipe.formats}: tasks must be in {tuple(tasks.TASKS)}, shares sum to <= 1"
        )
    rng = random.Random(recipe.seed)
    weights = {d: w for d, w in recipe.mixture.items() if w > 0}
    by_domain = {d: [] for d in weights}
    domains_of, lengths, get = _documents(tokens)
    for i, (domain, n) in enumerate(zip(domains_of, lengths, strict=True)):
        if domain in by_domain and n >= recipe.min_doc_tokens:
            by_domain[domain].append(i)
    missing = [d for d, docs in by_domain.items() if not docs]
    for d in missing:  # a domain this profile does not have (e.g. books on tiny)
        weights.pop(d)
    if not weights:
        raise ValueError(
            f"no training documents for mixture {recipe.mixture} (min_doc_tokens={recipe.min_doc_tokens})"
        )
    orders = {d: _doc_order(by_domain[d], random.Random(f"{recipe.seed}-{d}")) for d in weights}
    # the document each domain's last row cut, as (index, its tokens used with its BOS), or None
    pending = dict.fromkeys(weights)
    read = functools.lru_cache(maxsize=len(weights) + 1)(lambda i: [bos_id, *get(i)])
    domains, probs = zip(*weights.items(), strict=True)
    formats = [(t, share) for t, share in recipe.formats.items() if share > 0]
    pool = None
    if any(tasks.TASKS[t].needs_pool for t, _ in formats):  # (reads the mixture's documents)
        chosen = [i for docs in by_domain.values() for i in docs]
        if tasks.in_memory(tokens):
            pool = tasks.Pool(tokenizer, [get(i) for i in chosen])
        else:  # paper scale: a document at a time
            docs = tasks.Documents(tokens, chosen, [lengths[i] for i in chosen])
            pool = tasks.Pool(tokenizer, docs)
    for row in itertools.count():
        u, task = rng.random(), None
        for t, share in formats:
            if u < share:
                task = t
                break
            u -= share
        if task is not None:
            made = _format_row(task, tokenizer, recipe, rng, pool)
            if row >= start:
                yield made
            continue
        d = rng.choices(domains, probs)[0]
        pieces, need = [], recipe.seq_len  # the row: (document, from, tokens) in turn
        while need:
            i, used = pending[d] or (next(orders[d]), 0)
            take = min(lengths[i] + 1 - used, need)  # + 1: the document's BOS
            pieces.append((i, used, take))
            need -= take
            pending[d] = (i, used + take) if used + take <= lengths[i] else None
        if row >= start:
            yield _document_row(pieces, read, recipe.document_masking)


def _document_row(pieces: list[tuple[int, int, int]], read, document_masking: bool) -> dict:
    """A packed row of documents' ``pieces`` (index, first token, tokens; ``read(index)``: the
    document's ids from its BOS on)."""
    ids = [t for i, first, take in pieces for t in read(i)[first : first + take]]
    sizes = [take for _, _, take in pieces]
    input_ids = torch.tensor(ids)
    labels = input_ids.clone()
    if document_masking:
        starts = torch.tensor([0, *sizes[:-1]]).cumsum(0)
        labels[starts] = IGNORE
    return {
        "input_ids": input_ids,
        "position_ids": attention.position_ids(sizes, document_masking),
        "labels": labels,
        "loss_weights": torch.ones(len(ids)),
    }


def packed_rows(tokens, recipe: Recipe, bos_id: int, n_rows: int, tokenizer=None) -> list[dict]:
    """``n_rows`` training rows of ``recipe.seq_len`` tokens.

    Each LM row draws a domain by ``recipe.mixture`` and fills the row with that domain's documents
    (cut where the row ends; the rest starts the next row of that domain). With document masking the
    position ids restart per document and the first token of each document is not a target. A share
    ``recipe.formats[task]`` of rows are examples of that task (:mod:`lcx.tasks`, training seeds, text
    from the training documents) at random lengths up to ``seq_len`` and random depths.
    """
    return list(itertools.islice(iter_packed_rows(tokens, recipe, bos_id, tokenizer), n_rows))


class RowStream(torch.utils.data.IterableDataset):
    """``n`` rows of :func:`iter_packed_rows` (or, given ``long_short``, the keywords
    ``long_share``, ``long_mixture`` and ``short_mixture``, of :func:`iter_long_short_rows`), made
    as they are read: a run at paper scale, whose rows would not fit in memory (ProLong's 5B tokens
    at 64K are ~140 GB of rows). Every pass makes the same rows in the same order, so a resumed run
    (the Trainer skips the batches it has trained on) and every rank see what a single pass would;
    under several processes accelerate's loader reads it on the main rank and sends each rank its
    share of every step. ``tokens``: a tokenized split (a ``datasets.Dataset``, read a document at
    a time) or a dict of lists. A resumed run reads :meth:`resumed`'s stream."""

    start = 0  # the first row a pass makes (:meth:`resumed`)

    def __init__(
        self, tokens, recipe: Recipe, bos_id: int, n: int, tokenizer=None, long_short=None
    ):
        self.tokens, self.recipe, self.bos_id, self.n = tokens, recipe, bos_id, n
        self.tokenizer, self.long_short = tokenizer, dict(long_short or {})

    def __iter__(self):
        if self.long_short:
            return iter_long_short_rows(
                self.tokens,
                self.recipe,
                n_rows=self.n,
                bos_id=self.bos_id,
                tokenizer=self.tokenizer,
                start=self.start,
                **self.long_short,
            )
        rows = iter_packed_rows(self.tokens, self.recipe, self.bos_id, self.tokenizer, self.start)
        return itertools.islice(rows, self.n - self.start)

    def __len__(self) -> int:
        return self.n

    def resumed(self, start: int) -> RowStream:
        """This stream from row ``start`` on, what a run resumed after ``start`` rows reads: the
        rows before it are passed over without reading their documents (:func:`iter_packed_rows`),
        where the Trainer's own skip would make every one of them (at 64K, ~25 ms a row: hours for
        a run killed late in ProLong's 5B tokens). Its length stays ``n``, the run's rows, so the
        Trainer counts its steps and epochs as in the first pass."""
        return _resumed(self, start)

    @property
    def seq_len(self) -> int:
        return self.recipe.seq_len

    def key(self) -> str:
        """What the rows are made from, hashed (a run's key without making every row): the split's
        fingerprint, the recipe, the BOS id, the count and the long/short parts."""
        source = getattr(self.tokens, "_fingerprint", None) or rows_key_of_lists(self.tokens)
        spec = [source, self.recipe.config(), self.bos_id, self.n, sorted(self.long_short.items())]
        return hashlib.sha256(repr(spec).encode()).hexdigest()[:16]


class Stream(torch.utils.data.IterableDataset):
    """``n`` rows of ``seq_len`` tokens from ``make(*args)`` (an iterator of rows, such as a
    builder's ``iter_*``), made as they are read: what a run trains on when its rows would not fit
    in memory. Every pass calls ``make`` again and makes the same rows in the same order, so a
    resumed run and every rank see what one pass would; ``list(stream)`` is the rows in memory.

    ``spec`` is everything the rows depend on besides the code (the corpus' and tokenizer's cache
    keys, the seed, the lengths): with the fingerprint of the code that makes them (``rows``,
    ``tasks`` and ``make``'s module) it is the rows' key (:func:`rows_key`), so a run's cache key
    does not need the rows made. ``make`` and ``args`` must pickle (module-level functions and
    ``functools.partial``), as a launched run sends the stream to its ranks."""

    start = 0  # the first row a pass makes (:meth:`resumed`)

    def __init__(self, n: int, seq_len: int, spec, make, *args):
        self.n, self.seq_len, self.spec, self.make, self.args = n, seq_len, spec, make, args

    def __iter__(self):
        count = self.start
        for row in _made_from(self.make, self.args, self.start, self.n):
            if len(row["input_ids"]) != self.seq_len:
                raise ValueError(f"a row of {len(row['input_ids'])} tokens, not {self.seq_len}")
            count += 1
            yield row
        if count < self.n:
            raise ValueError(f"{_name(self.make)} made {count} rows, not {self.n}")

    def __len__(self) -> int:
        return self.n

    def resumed(self, start: int) -> Stream:
        """This stream from row ``start`` on (a resumed run's; its length stays ``n``). Rows cut
        at the window from a stream of longer rows pass over the longer rows as that stream does
        (:meth:`RowStream.resumed`); any other maker's rows before ``start`` are made and dropped
        (an SFT or mixed stream's rows are examples drawn one after another)."""
        return _resumed(self, start)

    def key(self) -> str:
        makers = [self.make, *_makers(self.args)]  # the maker and every maker in its arguments
        code = cache.code_fingerprint("rows", "tasks", *{_root(m).__module__ for m in makers})
        values = [_name(self.make), *_values(self.args)]
        spec = [values, self.n, self.seq_len, self.spec, code]
        return hashlib.sha256(repr(spec).encode()).hexdigest()[:16]


def _resumed(stream, start: int):
    if not 0 <= start <= stream.n:
        raise ValueError(f"start={start!r}: a stream of {stream.n} rows starts in [0, {stream.n}]")
    again = copy.copy(stream)
    again.start = start
    return again


def _made_from(make, args, start: int, n: int):
    """``make(*args)``'s rows ``start`` to ``n``."""
    if start and _root(make) is iter_at_window and hasattr(args[0], "resumed"):
        rows, W = args
        pieces = rows.seq_len // W
        made = make(rows.resumed(start // pieces), W)
        return itertools.islice(made, start % pieces, start % pieces + n - start)
    return itertools.islice(make(*args), start, n)


def _root(make):
    return _root(make.func) if isinstance(make, functools.partial) else make


def _name(make) -> str:
    f = _root(make)
    return f"{f.__module__}.{f.__qualname__}"


def _makers(x) -> list:
    """The functions in a stream's arguments (a mix's parts, partials' own arguments)."""
    if isinstance(x, functools.partial):
        return [x, *_makers(x.args), *_makers(x.keywords)]
    if inspect.isroutine(x):
        return [x]
    if isinstance(x, dict):
        return _makers(list(x.values()))
    if isinstance(x, list | tuple):
        return [m for v in x for m in _makers(v)]
    return []


def _values(x):
    """What a stream's arguments say beside its spec: functions by name, numbers, strings and
    recipes (their config) through lists, dicts and partials; other objects (a tokenizer, a
    pool, a split) are the spec's to name."""
    if isinstance(x, functools.partial):
        return [_name(x), _values(x.args), _values(x.keywords)]
    if isinstance(x, dict):
        return {str(k): _values(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_values(v) for v in x]
    if isinstance(x, bool | int | float | str | type(None)):
        return x
    if hasattr(x, "config") and dataclasses.is_dataclass(x):
        return x.config()
    if inspect.isroutine(x):
        return _name(x)
    return type(x).__name__


def rows_key_of_lists(tokens: dict) -> str:
    """A short hash of a dict of token-id lists (a split read into memory)."""
    h = hashlib.sha256()
    for ids, domain in zip(tokens["input_ids"], tokens["domain"], strict=True):
        h.update(str(domain).encode())
        h.update(repr(list(ids)).encode())
    return h.hexdigest()[:16]


def _format_row(task: str, tokenizer, recipe: Recipe, rng: random.Random, pool) -> dict:
    """One training row of ``task`` at a random length in [seq_len / 4, seq_len] (passkey: from
    its shortest prompt), padded to ``seq_len``; with ``recipe.pack_formats``, examples of
    lengths in [seq_len / 8, seq_len / 2] packed until the row is full."""
    if recipe.pack_formats:
        return _packed_format_row(task, tokenizer, recipe, rng, pool)
    low = tasks.passkey_min_length(tokenizer) if task == "passkey" else recipe.seq_len // 4
    if low > recipe.seq_len:
        raise ValueError(
            f"{task} rows need seq_len >= {low} with this tokenizer (got {recipe.seq_len})"
        )
    try:
        ex = tasks.training_example(task, tokenizer, rng.randint(low, recipe.seq_len), rng, pool)
    except ValueError:  # too short for this task's prompt: use the whole row
        ex = tasks.training_example(task, tokenizer, recipe.seq_len, rng, pool)
    ids = ex.prompt_ids + ex.answer_ids
    if len(ids) > recipe.seq_len:
        raise ValueError(f"{task} example of {len(ids)} tokens for a {recipe.seq_len}-token row")
    pad = recipe.seq_len - len(ids)
    weights = [1.0] * len(ex.prompt_ids) + [recipe.answer_weight] * len(ex.answer_ids) + [0.0] * pad
    labels = ids + [IGNORE] * pad
    ids = ids + [tokenizer.pad_token_id] * pad
    return {
        "input_ids": torch.tensor(ids),
        "position_ids": torch.arange(recipe.seq_len),
        "labels": torch.tensor(labels),
        "loss_weights": torch.tensor(weights),
    }


def _packed_format_row(task: str, tokenizer, recipe: Recipe, rng: random.Random, pool) -> dict:
    ids, weights, n = [], [], recipe.seq_len
    while n - len(ids) >= n // 8:
        room = n - len(ids)
        ex = None
        # a random length; if the task's prompt needs more, half a row; then the rest of the row
        for length in (rng.randint(n // 8, min(n // 2, room)), min(n // 2, room), room):
            try:
                ex = tasks.training_example(task, tokenizer, length, rng, pool)
                break
            except ValueError:
                continue
        if ex is None:
            break
        ids += ex.prompt_ids + ex.answer_ids
        weights += [1.0] * len(ex.prompt_ids) + [recipe.answer_weight] * len(ex.answer_ids)
    if not ids:  # the task needs the whole row
        return _format_row(
            task, tokenizer, dataclasses.replace(recipe, pack_formats=False), rng, pool
        )
    pad = n - len(ids)
    return {
        "input_ids": torch.tensor(ids + [tokenizer.pad_token_id] * pad),
        "position_ids": torch.arange(n),
        "labels": torch.tensor(ids + [IGNORE] * pad),
        "loss_weights": torch.tensor(weights + [0.0] * pad),
    }


def iter_long_short_rows(
    tokens,
    recipe: Recipe,
    long_share: float,
    n_rows: int,
    bos_id: int,
    long_mixture,
    short_mixture,
    tokenizer=None,
    start: int = 0,
):
    """:func:`long_short_rows`' ``n_rows`` rows, one at a time: which part each row comes from is
    a shuffle (by ``recipe.seed``) of the parts' counts (:func:`share_counts`), and each part's
    rows come from its own :func:`iter_packed_rows` in order. From row ``start``, the rows before
    it passed over as :func:`iter_packed_rows` passes over them."""
    if not 0 <= long_share <= 1:
        raise ValueError(f"long_share={long_share!r} must be in [0, 1]")
    long = dataclasses.replace(
        recipe, mixture=dict(long_mixture), min_doc_tokens=recipe.seq_len, formats={}
    )
    short = dataclasses.replace(recipe, mixture=dict(short_mixture), min_doc_tokens=0)
    counts = share_counts({"long": long_share, "short": 1 - long_share}, n_rows)
    order = [part for part, count in counts.items() for _ in range(count)]
    random.Random(recipe.seed).shuffle(order)
    before = order[:start]
    parts = {  # generators: a part without rows is never started
        "long": iter_packed_rows(tokens, long, bos_id, start=before.count("long")),
        "short": iter_packed_rows(tokens, short, bos_id, tokenizer, start=before.count("short")),
    }
    for part in order[start:]:
        yield next(parts[part])


def long_short_rows(
    tokens,
    recipe: Recipe,
    long_share: float,
    n_rows: int,
    bos_id: int,
    long_mixture,
    short_mixture,
    tokenizer=None,
) -> list[dict]:
    """ProLong §3's continued-training rows: a share ``long_share`` of rows are long documents
    (``long_mixture``'s domains, only documents at least ``recipe.seq_len`` long, so a row is one
    document's chunk), the rest pack short data (``short_mixture``) with ``recipe``'s document
    masking, the two kinds shuffled together. Format rows (``recipe.formats``) go in the short
    part."""
    return list(
        iter_long_short_rows(
            tokens, recipe, long_share, n_rows, bos_id, long_mixture, short_mixture, tokenizer
        )
    )


# --- SFT rows: examples with the loss on their responses -------------------------------------------


def _padded_row(ids, pos, labels, weights, seq_len: int, pad_id: int) -> dict:
    """A training row padded to ``seq_len`` (the padding's positions run on from 0, no loss)."""
    pad = seq_len - len(ids)
    return {
        "input_ids": torch.tensor(ids + [pad_id] * pad),
        "position_ids": torch.tensor(pos + list(range(pad))),
        "labels": torch.tensor(labels + [IGNORE] * pad),
        "loss_weights": torch.tensor(weights + [0.0] * pad),
    }


def sft_rows(examples, seq_len: int, pad_id: int, loss_on_inputs: bool = False) -> list[dict]:
    """Instruction-tuning rows: examples packed into ``seq_len`` rows with document masking. An
    example is a (prompt ids, response ids) pair, or a list of such pairs (the turns of one
    conversation, trained on every response). The loss is on responses only, or on inputs too
    (Llama 2 Long Table 9). Examples longer than ``seq_len`` are dropped."""
    return list(iter_sft_rows(examples, seq_len, pad_id, loss_on_inputs))


def iter_sft_rows(examples, seq_len: int, pad_id: int, loss_on_inputs: bool = False):
    """:func:`sft_rows`' rows one at a time, from ``examples`` (which may be a stream)."""
    ids, pos, labels, weights = [], [], [], []
    for example in examples:
        turns = [example] if isinstance(example, tuple) else list(example)
        n = sum(len(p) + len(r) for p, r in turns)
        if n > seq_len:
            continue
        if len(ids) + n > seq_len:
            yield _padded_row(ids, pos, labels, weights, seq_len, pad_id)
            ids, pos, labels, weights = [], [], [], []
        pos += list(range(n))
        for i, (prompt, response) in enumerate(turns):
            ids += [*prompt, *response]
            # a document's first token is never a target
            labels += [IGNORE, *prompt[1:], *response] if i == 0 else [*prompt, *response]
            weights += [1.0 if loss_on_inputs else 0.0] * len(prompt) + [1.0] * len(response)
    if ids:
        yield _padded_row(ids, pos, labels, weights, seq_len, pad_id)


def conversation_rows(conversations, seq_len: int, pad_id: int) -> list[dict]:
    """One row per :class:`lcx.tasks.Conversation` (context, then each question and its answer),
    padded to ``seq_len``; the loss is on the answers only, as Llama-3 80K fine-tunes the model to
    answer every question of a context's conversation. Conversations longer than ``seq_len`` are
    dropped."""
    return list(iter_conversation_rows(conversations, seq_len, pad_id))


def iter_conversation_rows(conversations, seq_len: int, pad_id: int):
    """:func:`conversation_rows`' rows one at a time."""
    for conv in conversations:
        ids, weights = list(conv.context_ids), [0.0] * len(conv.context_ids)
        for question, answer in conv.turns:
            ids += [*question, *answer]
            weights += [0.0] * len(question) + [1.0] * len(answer)
        if len(ids) > seq_len:
            continue
        labels = [IGNORE if w == 0 else t for t, w in zip(ids, weights, strict=True)]
        yield _padded_row(ids, list(range(len(ids))), labels, weights, seq_len, pad_id)


def task_sft_rows(
    task: str,
    tokenizer,
    n_rows: int,
    seq_len: int,
    seed: int,
    pool=None,
    lengths: tuple[int, int] | None = None,
    loss_on_inputs: bool = False,
) -> list[dict]:
    """``n_rows`` fine-tuning rows of ``task`` (:mod:`lcx.tasks` training seeds, example lengths
    drawn uniformly from ``lengths``, by default [seq_len / 4, seq_len)), packed by
    :func:`sft_rows`; the loss is on the answers only unless ``loss_on_inputs``."""
    return list(
        iter_task_sft_rows(task, tokenizer, n_rows, seq_len, seed, pool, lengths, loss_on_inputs)
    )


def iter_task_sft_rows(
    task: str,
    tokenizer,
    n_rows: int,
    seq_len: int,
    seed: int,
    pool=None,
    lengths: tuple[int, int] | None = None,
    loss_on_inputs: bool = False,
):
    """:func:`task_sft_rows`' rows one at a time."""
    lo, hi = lengths or (seq_len // 4, seq_len - 1)
    if not 0 < lo <= hi < seq_len:
        raise ValueError(f"lengths={lengths!r} must satisfy 0 < lo <= hi < seq_len={seq_len}")
    examples = _task_examples(task, tokenizer, n_rows * seq_len, lo, hi, seed, pool)
    rows = iter_sft_rows(examples, seq_len, tokenizer.pad_token_id, loss_on_inputs)
    return itertools.islice(rows, n_rows)


def task_part(task: str, tokenizer, seq_len: int, seed: int, pool, lengths, loss_on_inputs=False):
    """A mix's part of ``task``'s SFT rows (:func:`iter_mix`): ``make(count)`` makes ``count``
    rows by :func:`iter_task_sft_rows`; a partial, so a stream that holds it pickles."""
    return functools.partial(
        iter_task_sft_rows,
        task,
        tokenizer,
        seq_len=seq_len,
        seed=seed,
        pool=pool,
        lengths=lengths,
        loss_on_inputs=loss_on_inputs,
    )


def _task_examples(task: str, tokenizer, n_tokens: int, lo: int, hi: int, seed: int, pool):
    """(prompt, answer) examples of ``task`` at lengths drawn from [lo, hi], ``n_tokens`` in all."""
    rng, total = random.Random(seed), 0
    while total < n_tokens:
        try:
            length = rng.randint(lo, hi)
            ex = tasks.training_example(task, tokenizer, length, rng, pool)
        except ValueError:  # too short for this task's prompt: the longest allowed
            ex = tasks.training_example(task, tokenizer, hi, rng, pool)
        yield (ex.prompt_ids, ex.answer_ids)
        total += ex.length


# --- chat and synthetic instruction rows: ProLong's SFT data ----------------------------------------


# ProLong's SFT data is UltraChat: short multi-turn chats (1.2K tokens on average, none over 4.1K).
# Our stand-in: short QA conversations over corpus text and short single-turn instructions in the
# probe tasks' formats, one task per HELMET category where the window fits it.
CHAT_TASKS = ("json_kv", "multidoc_qa", "rerank", "icl", "doc_qa", "summary")
CHAT_FAMILIES = ("single_detail", "multi_detail_homogeneous")


def chat_rows(
    tokenizer,
    n_rows: int,
    seq_len: int,
    seed: int,
    pool,
    lengths: tuple[int, int],
    task_names=CHAT_TASKS,
    turns: int = 3,
) -> list[dict]:
    """ProLong's short-only SFT data in miniature: ``n_rows`` rows of ``seq_len`` packed with short
    examples (lengths from ``lengths``), alternating multi-turn QA conversations
    (:func:`lcx.tasks.long_qa` at short lengths, loss on every answer; a single-turn instruction
    where ``lengths`` leave no room for two turns) and single-turn instructions of ``task_names``;
    the loss is on the responses only."""
    lo, hi = lengths
    if not 0 < lo <= hi < seq_len:
        raise ValueError(f"lengths={lengths!r} must satisfy 0 < lo <= hi < seq_len={seq_len}")
    rng, examples, total, i = random.Random(seed), [], 0, 0
    while total < n_rows * seq_len:
        length = rng.randint(lo, hi)
        conv = None
        if i % 2 == 0:  # a conversation: as many turns (>= 2) as fit this length, or as fit hi
            family = CHAT_FAMILIES[(i // 2) % len(CHAT_FAMILIES)]
            seed_i = rng.randrange(10**6)
            for size, k in [(n, k) for n in (length, hi) for k in range(turns, 1, -1)]:
                try:
                    conv = tasks.long_qa(tokenizer, size, seed_i, "train", pool, family, k)
                    break
                except ValueError:
                    continue
        if conv is not None:
            first_q, first_a = conv.turns[0]
            example = [(list(conv.context_ids) + list(first_q), list(first_a)), *conv.turns[1:]]
        else:
            task = task_names[(i // 2) % len(task_names)]
            try:
                ex = tasks.training_example(task, tokenizer, length, rng, pool)
            except ValueError:  # too short for this task's prompt: the longest allowed
                ex = tasks.training_example(task, tokenizer, hi, rng, pool)
            example = (ex.prompt_ids, ex.answer_ids)
        examples.append(example)
        total += sum(
            len(p) + len(r) for p, r in ([example] if isinstance(example, tuple) else example)
        )
        i += 1
    return sft_rows(examples, seq_len, tokenizer.pad_token_id)[:n_rows]


def chat_template_rows(conversations, tokenizer, n_rows: int, seq_len: int) -> list[dict]:
    """SFT rows from chat conversations (lists of ``{"role", "content"}`` messages, as UltraChat's
    ``messages`` column) rendered by the tokenizer's chat template, packed by :func:`sft_rows`:
    every assistant message is a response with the loss on it; everything before it (system and
    user turns, the template's markup) is prompt. ``conversations`` may be a stream: it is read
    until ``n_rows`` rows are full."""
    rows = list(iter_chat_template_rows(conversations, tokenizer, n_rows, seq_len))
    if len(rows) < n_rows:
        raise ValueError(f"the conversations filled {len(rows)} rows of {seq_len}, not {n_rows}")
    return rows


def iter_chat_template_rows(conversations, tokenizer, n_rows: int, seq_len: int):
    """:func:`chat_template_rows`' rows one at a time (``conversations``: an iterable, or a
    function that returns one, such as :func:`lcx.data.ultrachat`, for a stream that pickles)."""
    examples = _chat_examples(conversations, tokenizer, n_rows * seq_len, seq_len)
    return itertools.islice(iter_sft_rows(examples, seq_len, tokenizer.pad_token_id), n_rows)


def _chat_examples(conversations, tokenizer, n_tokens: int, seq_len: int):
    """Each conversation's turns (prompt, assistant message) as the chat template renders them,
    until ``n_tokens`` tokens."""

    def render(messages, generation_prompt=False):
        out = tokenizer.apply_chat_template(
            messages, add_generation_prompt=generation_prompt, tokenize=True
        )
        return list(out["input_ids"] if hasattr(out, "keys") else out)

    total = 0
    for messages in conversations() if callable(conversations) else conversations:
        turns, done = [], []
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            prefix = render(messages[:i], generation_prompt=True)
            full = render(messages[: i + 1])
            if prefix[: len(done)] != done or full[: len(prefix)] != prefix:
                raise ValueError(
                    "the chat template does not render a conversation's prefixes stably"
                )
            turns.append((prefix[len(done) :], full[len(prefix) :]))
            done = full
        if turns and len(done) <= seq_len:  # longer ones would be dropped by sft_rows
            yield turns
            total += len(done)
        if total >= n_tokens:
            break


# ProLong §5: its synthetic long instruction data is 40% QA, 30% RAG and 30% summarization.
SYNTHETIC_LONG = {"self_instruct": 0.4, "multidoc_qa": 0.3, "summary": 0.3}


def synthetic_long_rows(
    tokenizer, n_rows: int, seq_len: int, seed: int, pool, lengths: tuple[int, int], shares=None
) -> list[dict]:
    """ProLong's synthetic long instruction data in miniature: QA written from one chunk of a long
    document with the whole document as context (``self_instruct``), the same with retrieved-like
    passages (``multidoc_qa``) and summarization (``summary``), in :data:`SYNTHETIC_LONG`'s shares."""
    shares = SYNTHETIC_LONG if shares is None else shares
    parts = {
        task: (
            share,
            lambda n, task=task, i=i: task_sft_rows(
                task, tokenizer, n, seq_len, 1000 * seed + i, pool, lengths
            ),
        )
        for i, (task, share) in enumerate(shares.items())
    }
    return mix_rows(parts, n_rows, seed)


def iter_synthetic_long_rows(
    tokenizer, n_rows: int, seq_len: int, seed: int, pool, lengths: tuple[int, int], shares=None
):
    """:func:`synthetic_long_rows`' parts and counts made as they are read (:func:`iter_mix`)."""
    shares = SYNTHETIC_LONG if shares is None else shares
    parts = {
        task: (share, task_part(task, tokenizer, seq_len, 1000 * seed + i, pool, lengths))
        for i, (task, share) in enumerate(shares.items())
    }
    return iter_mix(parts, n_rows, seed)


# --- mixes ---------------------------------------------------------------------------------------


def share_counts(shares: dict[str, float], n: int) -> dict[str, int]:
    """Split ``n`` rows by ``shares`` (any positive weights): the counts sum to ``n`` exactly, each
    within one row of ``n * share / total`` (largest remainders get the leftover rows)."""
    if n < 0 or not shares or any(not v >= 0 for v in shares.values()) or not sum(shares.values()):
        raise ValueError(
            f"need n >= 0 and non-negative shares with a positive sum, got {n}, {shares}"
        )
    total = sum(shares.values())
    exact = {k: n * v / total for k, v in shares.items()}
    counts = {k: int(v) for k, v in exact.items()}
    by_remainder = sorted(shares, key=lambda k: exact[k] - counts[k], reverse=True)
    for k in by_remainder[: n - sum(counts.values())]:
        counts[k] += 1
    return counts


def mix_rows(parts: dict, n: int, seed: int) -> list[dict]:
    """A data recipe's ``n`` training rows: ``parts`` maps a name to ``(share, make)``, where
    ``make(count)`` returns ``count`` rows of that kind; the counts follow the shares
    (:func:`share_counts`) and the rows are shuffled together by ``seed``.

    Llama-3 80K's mix is ``{"long QA": (3.5, ...), "short LM": (5, ...), "instructions": (12, ...)}``;
    ProLong's long/short ratio and SFT mixes are the same call with other shares.
    """
    counts = share_counts({k: share for k, (share, _) in parts.items()}, n)
    rows = []
    for name, (_, make) in parts.items():
        if counts[name]:
            made = make(counts[name])
            if len(made) != counts[name]:
                raise ValueError(f"part {name!r} made {len(made)} rows, asked for {counts[name]}")
            rows += made
    random.Random(seed).shuffle(rows)
    return rows


def iter_mix(parts: dict, n: int, seed: int):
    """:func:`mix_rows` made as it is read: ``parts`` maps a name to ``(share, make)``, where
    ``make(count)`` returns an iterator of ``count`` rows; the counts are :func:`mix_rows`' and
    the order of the parts is shuffled by ``seed``, each part's rows coming in the order ``make``
    makes them (a list mix shuffles the rows themselves, which needs them all at once)."""
    counts = share_counts({k: share for k, (share, _) in parts.items()}, n)
    labels = [name for name in parts for _ in range(counts[name])]
    random.Random(seed).shuffle(labels)
    made = {name: iter(make(counts[name])) for name, (_, make) in parts.items() if counts[name]}
    for name in labels:
        row = next(made[name], None)
        if row is None:
            raise ValueError(f"part {name!r} made fewer rows than the {counts[name]} asked")
        yield row


def mixed(parts: dict, n: int, seed: int, stream: bool, seq_len: int, spec):
    """A mix of ``parts`` (name -> ``(share, make)``, ``make(count)`` an iterator of rows, as for
    :func:`iter_mix`): :func:`mix_rows`' list, or with ``stream`` a :class:`Stream` of
    :func:`iter_mix` keyed by ``spec`` (paper scale)."""
    if stream:
        return Stream(n, seq_len, spec, iter_mix, parts, n, seed)
    lists = {k: (share, lambda c, make=make: list(make(c))) for k, (share, make) in parts.items()}
    return mix_rows(lists, n, seed)


def at_window(rows, W: int):
    """:func:`iter_at_window`'s pieces of ``rows``: a list for a list, a :class:`Stream` for a
    stream (:class:`RowStream` or :class:`Stream`)."""
    if isinstance(rows, RowStream | Stream):
        if rows.seq_len % W:
            raise ValueError(f"a row of {rows.seq_len} tokens does not cut into pieces of {W}")
        spec = [rows_key(rows), W]
        return Stream(len(rows) * (rows.seq_len // W), W, spec, iter_at_window, rows, W)
    return list(iter_at_window(rows, W))


def iter_at_window(rows, W: int):
    """Training rows cut into rows of ``W`` tokens (every row into ``len // W`` pieces, in order):
    the same tokens, labels and loss weights, none further than ``W`` from its context. Position
    ids restart at 0 in each piece and wherever they restarted before (a packed document's start).
    The controls trained at the native window see exactly the tokens an extension trains on
    (Together's T2, Llama-3 80K's Q4); a piece's first token has no context before it, so one
    target in ``W`` is lost at each cut."""
    for row in rows:
        n = len(row["input_ids"])
        if n % W:
            raise ValueError(f"a row of {n} tokens does not cut into pieces of {W}")
        for start in range(0, n, W):
            piece = {k: v[start : start + W].clone() for k, v in row.items()}
            pos = piece["position_ids"]
            starts = torch.ones(W, dtype=torch.bool)  # where a segment starts in the piece
            starts[1:] = pos[1:] != pos[:-1] + 1
            first = torch.cummax(torch.where(starts, torch.arange(W), 0), 0).values
            piece["position_ids"] = torch.arange(W) - first
            yield piece


def rows_key(rows: list[dict]) -> str:
    """A short hash of rows' content (every tensor's bytes, keys in order): a run trained on
    ready-made rows has it in its cache key. A stream is keyed by what makes it."""
    if isinstance(rows, RowStream | Stream):
        return rows.key()
    h = hashlib.sha256()
    for row in rows:
        for k in sorted(row):
            h.update(k.encode())
            h.update(row[k].numpy().tobytes())
    return h.hexdigest()[:16]
