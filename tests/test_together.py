"""lcx.together against Together's post (the blog's tables and recipe) and the rows it builds."""

import dataclasses

import pytest

from lcx import chapter, together, train


def test_lengths_at_the_papers_window_are_the_papers_lengths():
    assert together.lengths(4096) == [2048, 4096, 8192, 16384, 32768]  # PG-19 table, 2K..32K
    assert together.qa_lengths(4096) == [2900, 4400, 7400, 14800]  # 20..100 documents, on average
    assert together.summary_length(4096) == 4500  # BookSum's average test input
    assert together.FACTOR * 4096 == 32768
    # and at W = 256 the same ratios to the window
    assert together.qa_lengths(256) == [181, 275, 462, 925]


@pytest.mark.parametrize("profile", ["tiny", "cpu", "gpu"])
def test_recipes_carry_the_posts_mixture_and_filter(profile):
    W = 4096 if profile == "gpu" else 256
    phase1, phase2, finetune = together.recipes(profile, W)
    assert phase1.seq_len == phase2.seq_len == 32768 * W // 4096
    assert phase1.formats == {"missing_chunk": 0.25}  # 25% UL2 Oscar
    assert phase1.min_doc_tokens * 32768 == 2048 * phase1.seq_len  # drop < 2K of 32K
    assert set(phase1.mixture) == {"books", "prose", "code"}  # Book, ArXiv, other
    assert phase2.pack_formats and sum(phase2.formats.values()) == pytest.approx(0.4)  # 20% + 20%
    assert finetune["lr"] == phase2.lr and phase1.bf16 == (profile != "tiny")
    columns = {"phase 1": phase1, "phase 2": phase2}
    table = train.recipe_table(columns, together.HYPERPARAMETERS, "paper").set_index(
        "hyperparameter"
    )
    assert list(table.index) == list(together.HYPERPARAMETERS)
    assert table.loc["seq_len", "phase 2"] == str(phase2.seq_len)
    extra = train.recipe_table(columns, together.HYPERPARAMETERS, "paper", ["seq_len", "bf16"])
    assert extra.set_index("hyperparameter").loc["bf16", "paper"] == ""  # the post does not say


def test_composition_counts_the_recipes_task_rows(tiny):
    """The rows phase 1 and phase 2 really build (T3): the shares come from the rows' loss weights,
    so they are close to, not equal to, the recipe's (a packed row holds text and examples)."""
    tok, tokens = tiny
    phase1, phase2, _ = together.recipes("tiny", 128)
    rows1 = together.composition(phase1, tokens, tok, n=200)
    rows2 = together.composition(phase2, tokens, tok, n=200)
    assert abs(rows1["task_share"] - 0.25) <= 0.1
    assert rows2["task_share"] > rows1["task_share"] and rows2["examples_per_task_row"] > 1
    # a recipe without formats has no task rows
    plain = dataclasses.replace(phase1, formats={})
    assert together.composition(plain, tokens, tok, n=20)["task_share"] == 0.0
    assert together.short_documents(tokens, 10**9) == sum(
        d != "short" for d in tokens["train"]["domain"]
    )


def test_chapter_parameters_fail_with_the_allowed_values():
    assert chapter.count("cpu", "qa_n", None, tiny=3, cpu=24, gpu=100) == 24
    assert chapter.count("paper", "qa_n", None, tiny=3, cpu=24, gpu=100) == 100
    assert chapter.count("cpu", "qa_n", 7, tiny=3, cpu=24, gpu=100) == 7
    with pytest.raises(ValueError, match="qa_n"):
        chapter.count("cpu", "qa_n", 0, tiny=3, cpu=24, gpu=100)
    with pytest.raises(ValueError, match="qa_n"):
        chapter.count("cpu", "qa_n", 2.5, tiny=3, cpu=24, gpu=100)
    for bad in ([], [0, 0], (0, 1), [0, "1"]):
        with pytest.raises(ValueError, match="seeds"):
            chapter.check_seeds(bad)
