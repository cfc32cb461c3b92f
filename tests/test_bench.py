"""lcx.bench's attention table (T6): measured throughput and peak memory per attention kernel."""

import math

import pytest
import torch

from lcx import bench

ROWS, HEADS, LAYERS = 4, 2, 2  # batch rows used below; the tiny size's heads and layers


@pytest.fixture
def one_thread():
    """Measuring children take the parent's thread count: one keeps the tests light and stable."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def measured():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return bench.attention_table(
            size="tiny",
            window=64,
            multiples=(1, 4, 8),
            impls=["eager", "sdpa"],
            batch_rows=ROWS,
            steps=2,
            vocab=256,
        )
    finally:
        torch.set_num_threads(threads)


# The tests on `measured` share six measuring subprocesses (~15 s): slow.
@pytest.mark.slow
def test_table_rows_and_columns(measured):
    assert list(measured.columns) == list(bench.ATTENTION_COLUMNS)
    assert list(zip(measured.impl, measured.seq_len, measured.multiple, strict=True)) == [
        ("eager", 64, 1),
        ("eager", 256, 4),
        ("eager", 512, 8),
        ("sdpa", 64, 1),
        ("sdpa", 256, 4),
        ("sdpa", 512, 8),
    ]
    assert (measured["size"] == "tiny").all() and not measured.oom.any()
    for column in ("tokens_per_s", "peak_mb", "peak_rss_mb", "saved_mb"):
        assert all(math.isfinite(x) and x > 0 for x in measured[column]), column
    assert (measured.peak_rss_mb > measured.peak_mb).all()


def scores_mb(seq_len: int) -> float:
    """One fp32 B x H x T x T tensor per layer, in MiB."""
    return ROWS * HEADS * LAYERS * seq_len**2 * 4 / 2**20


@pytest.mark.slow
def test_eager_keeps_the_score_matrix_for_backward(measured):
    """Eager attention saves the B x H x T x T fp32 probabilities of every layer for backward;
    SDPA's CPU flash kernel saves O(T) (its output and a B x H x T log-sum-exp). Counted exactly
    (``saved_mb``), eager keeps at least one and at most two such tensors per layer more than
    SDPA, less SDPA's log-sum-exp, and that excess grows with T^2, not T."""
    saved = measured.set_index(["impl", "seq_len"]).saved_mb
    excess = {t: saved["eager", t] - saved["sdpa", t] for t in (64, 256, 512)}
    for t, mb in excess.items():
        lse_mb = ROWS * HEADS * LAYERS * t * 4 / 2**20
        assert scores_mb(t) - lse_mb - 1e-6 <= mb <= 2 * scores_mb(t), (t, mb)
    assert excess[256] / excess[64] > 8 and excess[512] / excess[256] > 3  # linear: 4 and 2
    sdpa_growth = saved["sdpa", 512] - saved["sdpa", 256]
    assert sdpa_growth < saved["sdpa", 256]  # O(T): doubling T adds less than all it had


@pytest.mark.slow
def test_eager_resident_memory_grows_with_the_score_matrix(measured):
    """The same in resident memory, at 8x the window where the probabilities (16 MiB) dwarf the
    allocator's run-to-run variation (a few MB at this size): eager's peak growth exceeds SDPA's
    by at least one score tensor per layer."""
    peak = measured.set_index(["impl", "seq_len"]).peak_mb
    assert peak["eager", 512] - peak["sdpa", 512] >= scores_mb(512)
    assert peak["eager", 512] - peak["eager", 64] >= scores_mb(512)


def test_attention_step_result(one_thread):
    out = bench.attention_step("tiny", 128, "sdpa", steps=2, vocab=256)
    assert {"impl", "seq_len", "tokens_per_s", "peak_mb", "peak_rss_mb"} <= set(out)
    assert out["impl"] == "sdpa" and out["seq_len"] == 128
    assert math.isfinite(out["tokens_per_s"]) and out["tokens_per_s"] > 0
    assert 0 < out["peak_mb"] < out["peak_rss_mb"]
    if out["device"] == "cpu":
        assert out["memory"] == "VmHWM after clear_refs"


def test_unknown_implementation_names_the_allowed_ones():
    with pytest.raises(ValueError, match="flash_attention_2.*sdpa.*eager"):
        bench.attention_step("tiny", 64, "paged")
    with pytest.raises(ValueError, match="flash_attention_2.*sdpa.*eager"):
        bench.attention_table("tiny", 64, impls=["sdpa", "paged"])


def test_errors_in_the_measuring_process_come_back(one_thread):
    with pytest.raises(RuntimeError, match="size='nope'"):
        bench.attention_step("nope", 64, "eager", steps=2, vocab=256)


def test_oom_messages_are_recognised():
    assert bench._is_oom(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried"))
    assert bench._is_oom(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert not bench._is_oom(RuntimeError("shape mismatch"))


@pytest.fixture
def fake_step(monkeypatch):
    """attention_step replaced by a stub that runs out of memory past 128 tokens under eager."""
    calls = []

    def step(size, seq_len, impl, **kw):
        calls.append((impl, seq_len))
        if impl == "eager" and seq_len > 128:
            raise torch.OutOfMemoryError("out of memory")
        return {
            "impl": impl,
            "seq_len": seq_len,
            "tokens_per_s": 1.0,
            "peak_mb": 2.0,
            "peak_rss_mb": 3.0,
        }

    monkeypatch.setattr(bench, "attention_step", step)
    monkeypatch.setattr(bench.attention, "available", lambda: ["sdpa", "eager"])
    return calls


def test_unavailable_implementations_are_skipped(fake_step):
    table = bench.attention_table("tiny", 64, multiples=(1,))
    assert fake_step == [("eager", 64), ("sdpa", 64)]
    assert list(table.impl) == ["eager", "sdpa"]
    with pytest.warns(UserWarning, match="flash_attention_2"):
        table = bench.attention_table(
            "tiny", 64, multiples=(1,), impls=["flash_attention_2", "sdpa"]
        )
    assert list(table.impl) == ["sdpa"]


def test_out_of_memory_is_a_cell_not_a_crash(fake_step):
    table = bench.attention_table("tiny", 64, multiples=(1, 2, 4), impls=["eager"])
    assert list(table.oom) == [False, False, True]
    last = table.iloc[-1]
    assert math.isnan(last.tokens_per_s) and math.isnan(last.peak_mb) and last.seq_len == 256
    assert table.tokens_per_s.iloc[0] == 1.0


@pytest.mark.slow  # four measuring subprocesses of the 'base' size
def test_method_step_full_finetuning_grows_memory_more_than_lora(one_thread):
    """Full fine-tuning keeps gradients and AdamW moments for every weight (~16 bytes each with
    the parameter; 'base' holds ~3M in its blocks), LoRA for the adapters and embeddings only."""
    kw = dict(steps=2, vocab=256, checkpointing=True)
    full = bench.attention_step("base", 128, "sdpa", method="full", **kw)
    lora = bench.attention_step("base", 128, "sdpa", method="lora", **kw)
    qlora = bench.attention_step("base", 128, "sdpa", method="qlora", **kw)
    assert full["method"] == "full" and qlora["method"] == "qlora"
    assert full["peak_mb"] - lora["peak_mb"] > 20
    assert math.isfinite(qlora["tokens_per_s"]) and qlora["peak_mb"] > 0
    # Checkpointing reaches the 4-bit copy too (it is a new model, made after the flag was set).
    plain = bench.attention_step("base", 128, "sdpa", method="qlora", steps=2, vocab=256)
    assert qlora["saved_mb"] < plain["saved_mb"] / 2, (qlora["saved_mb"], plain["saved_mb"])
    with pytest.raises(ValueError, match="method"):
        bench.attention_step("tiny", 64, "sdpa", method="adapters")


def test_packed_row_times_cover_each_row_and_implementation():
    from lcx import attention, models
    from lcx import rows as row_builders

    config = models.tiny_config("tiny", 300, 64, 520.0)
    rows = row_builders.sft_rows(
        [([1, *range(5, 5 + n - 2)], [3]) for n in (20, 30, 10, 60, 4)], 64, pad_id=0
    )
    times = bench.packed_row_times(config, rows, repeats=1)
    assert sorted(set(times.impl)) == sorted(["sdpa", attention.VARLEN])
    for _, t in times.groupby("impl"):
        assert t.row.tolist() == list(range(len(rows))) and (t.seconds > 0).all()
        spans = [attention.document_spans(r["position_ids"]) for r in rows]
        assert t.documents.tolist() == [len(s) for s in spans]
        assert t.sum_sq.tolist() == [sum((e - s) ** 2 for s, e in sp) for sp in spans]
    assert times.sum_sq.iloc[0] == 20**2 + 30**2 + 10**2 + 4**2  # three documents and the padding
    blocks = bench.packed_row_times(config, rows, repeats=1, head=False)  # P8 on gpu: no head
    assert blocks[["row", "impl", "tokens"]].equals(times[["row", "impl", "tokens"]])


def test_the_loss_in_pieces_keeps_no_logits_for_backward(one_thread):
    """What autograd keeps for the backward pass (counted exactly, SavedForBackward): with the loss
    over the whole logits, the logits' log-probabilities (seq x vocab, fp32) on top of the
    model's activations; computed in pieces (lcx.train.ChunkedLoss), none of them. The peak memory
    itself is `make bench`'s number (bench --loss), not a test."""
    seq, vocab = 256, 4096
    whole = bench.attention_step("tiny", seq, "sdpa", steps=2, vocab=vocab, loss_chunk=0)
    pieces = bench.attention_step("tiny", seq, "sdpa", steps=2, vocab=vocab, loss_chunk=64)
    hf = bench.attention_step("tiny", seq, "sdpa", steps=2, vocab=vocab)
    logits_mb = 2 * seq * vocab / 2**20  # at least the logits in 16 bits
    assert whole["saved_mb"] - pieces["saved_mb"] > logits_mb
    assert whole["saved_mb"] == pytest.approx(hf["saved_mb"], rel=0.05)  # as transformers' loss
