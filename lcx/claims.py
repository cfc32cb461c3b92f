"""The book's claims, as data: for each claim the chapter that tests it, the statement and the
paper's numbers as its scorecard quotes them. A chapter's scorecard row names a claim by its id
(:meth:`lcx.scorecard.Scorecard.add`), so a claim's words live here once, not in the notebook.

Claims R1-R4 (chapter 01) check RoPE's geometry; B1 (chapter 02) the base model; T1-T6 Together's
LLaMA-2-7B-32K; L1-L7 Llama 2 Long; Q1-Q6 Llama-3 80K QLoRA; P1-P9 ProLong.
"""

from __future__ import annotations

from dataclasses import dataclass

from .llama2_long import TABLE_5_BOOKS


@dataclass(frozen=True)
class Claim:
    chapter: str  # the notebook that tests it
    statement: str  # what the paper claims, as the book tests it (with its source)
    paper: str  # the paper's numbers or words, as the scorecard quotes them


CLAIMS = {
    "R1": Claim(
        "01_rope",
        "RoPE's attention score decays heavily with distance; PI and ABF decay less (Llama 2 Long Fig. 4)",
        "qualitative (Fig. 4)",
    ),
    "R2": Claim(
        "01_rope",
        "Granularity of consecutive positions: PI α/ln b ≈ 0.027, ABF 1/(ln b + ln β) ≈ 0.076 (Llama 2 Long App. B)",
        "0.027 (PI, α=1/4), 0.076 (ABF, β=50)",
    ),
    "R3": Claim(
        "01_rope",
        "Dynamic NTK suggests ~4M for Llama-3 8K→64K and ~64M for 64K→512K; ProLong uses 8M and 128M (ProLong App. B.1)",
        "~4M, ~64M",
    ),
    "R4": Claim(
        "01_rope",
        "Helix picture: PI shrinks the distance between consecutive positions, ABF keeps it (Llama 2 Long Fig. 8)",
        "PI: reduced considerably; ABF: almost the same; θ1 differs 6% (10K vs 500K, d=128)",
    ),
    "B1": Claim(
        "02_base_model",
        "An unextended model fails past its native window (Llama 2 Long Fig. 9a; Together's table; Llama-3 80K Fig. 2)",
        "loss explodes past 4K; no perplexity past 4K; topic retrieval fails past ~9K",
    ),
    "T1": Claim(
        "03_together_pi",
        "PI + continued pretraining: perplexity per byte keeps falling to 8W; the base model has none past W",
        "1.768 -> 1.742 from 2K to 32K; LLaMA-2 N/A past 4K",
    ),
    "T2": Claim(
        "03_together_pi",
        "Short-context quality is kept",
        "+0.5% per byte at 2K",
    ),
    "T3": Claim(
        "03_together_pi",
        "The two-phase data recipe (mixtures, length filter, packed in-context examples)",
        "25/25/25/25 phase 1, drop < 2K; phase 2 packed to 32K",
    ),
    "T4": Claim(
        "03_together_pi",
        "Multi-document QA: falls with k; PI beats truncated base; fine-tuning lifts every k",
        "0.315 -> 0.223 (32K); 0.245 -> 0.193 (LLaMA-2); fine-tuned +0.15..+0.18",
    ),
    "T5": Claim(
        "03_together_pi",
        "BookSum-format summarization: the fine-tuned model beats the base model on ROUGE-1/2/L",
        "R1/R2/RL 0.355/0.072/0.175 vs 0.063/0.008/0.042",
    ),
    "T6": Claim(
        "03_together_pi",
        "The attention implementation decides memory and throughput as context grows",
        "baseline OOM at 8K; FA2 1.6x over FA1 at 32K",
    ),
    "L1": Claim(
        "04_llama2_long_abf",
        "At 8W perplexity orders RoPE > PI > ABF, and only ABF keeps FIRST-SENTENCE-RETRIEVAL to 8W",
        "Table 5 (Books): "
        + ", ".join(f"{v} {p}" for v, p in TABLE_5_BOOKS.items())
        + "; Fig. 5: only ABF retrieves to 32K",
    ),
    "L2": Claim(
        "04_llama2_long_abf",
        "Unchanged RoPE trained at 8W cannot attend beyond ~1-1.5W",
        "§4.1: attention beyond ~6K is lost with the original RoPE",
    ),
    "L3": Claim(
        "04_llama2_long_abf",
        "Loss vs context follows (alpha/c)^beta + gamma",
        "Fig. 1: good fits for every size",
    ),
    "L3b": Claim(
        "04_llama2_long_abf",
        "The larger model has the larger beta",
        "Fig. 1: beta grows from 7B to 70B",
    ),
    "L4": Claim(
        "04_llama2_long_abf",
        "Short-context quality is kept",
        "Table 6: on par or better than Llama 2",
    ),
    "L5": Claim(
        "04_llama2_long_abf",
        "A 4K -> 32K curriculum costs up to ~40% fewer FLOPs than 32K from scratch at equal tokens",
        "Table 10: 3.783e22 from scratch, 2.270e22 switching at 80%",
    ),
    "L5b": Claim(
        "04_llama2_long_abf",
        "The curricula match 32K from scratch on long-context quality",
        "Table 11: CC ppl 7.67 from scratch, 7.59 for every curriculum; Table 10 QA on par",
    ),
    "L6": Claim(
        "04_llama2_long_abf",
        "In long instruction tuning, the LM loss on the long input improves downstream QA",
        "Table 9: Qasper 35.7 -> 38.9, NarrativeQA 22.3 -> 23.3, QuALITY 59.3 -> 77.3",
    ),
    "L7": Claim(
        "04_llama2_long_abf",
        "Past the training length ABF stays flat; the unextended base explodes",
        "App. C",
    ),
    "Q1": Claim(
        "05_llama3_80k_qlora",
        "QLoRA (4-bit, r=32, alpha=16, q/k/v/o + embeddings), base x400, lr 5e-5 linear, 1 epoch extends W -> 10W",
        "8K -> 80K in 8 hours on 8xA800",
    ),
    "Q2": Claim(
        "05_llama3_80k_qlora",
        "Needle-in-a-haystack ~100% over the training length and still high past it",
        "Fig. 1: 100% to 80K, high to 128K",
    ),
    "Q3": Claim(
        "05_llama3_80k_qlora",
        "Topic retrieval: the base fails past its window, the extended model stays ~100%",
        "Fig. 2: base fails past 9K; 80K model 100% to 70 topics",
    ),
    "Q4": Claim(
        "05_llama3_80k_qlora",
        "Short-context ability drops only slightly",
        "Table 3: MMLU 65.91 -> 64.44",
    ),
    "Q5": Claim(
        "05_llama3_80k_qlora",
        "Synthetic long QA (single-detail, multi-detail, biography) as multi-turn conversations, mixed with short LM and instruction data",
        "3.5K GPT-4 conversations + 5K RedPajama + 12K LongAlpaca",
    ),
    "Q6": Claim(
        "05_llama3_80k_qlora",
        "QLoRA costs less memory than LoRA and full fine-tuning at the target length",
        "one 8xA800 node, no parallelism needed (Unsloth)",
    ),
    "P1": Claim(
        "06_prolong",
        "Perplexity improves with more long data while the suite gets worse at 100% long",
        "Fig. 1: PPL falls from 40% to 100% long; the suite peaks at 60%",
    ),
    "P2": Claim(
        "06_prolong",
        "Code repos help recall most, books ICL/summarization, 1:1 is best overall",
        "Table 4: recall 99.2 code / 94.9 books; ICL 61.2 / 72.2; avg 52.3 / 53.8 / 54.6 (1:1)",
    ),
    "P3": Claim(
        "06_prolong",
        "60% long / 40% short beats 100% long; short quality falls as the long share grows",
        "Fig. 3: best average at 60%; short average falls monotonically",
    ),
    "P4": Claim(
        "06_prolong",
        "A RoPE base ~2x dynamic NTK's suggestion beats the suggestion, which beats the original",
        "Table 18: avg 29.1 (0.5M), 48.7 (4M), 54.6 (8M)",
    ),
    "P5": Claim(
        "06_prolong",
        "Document masking improves long- and short-context scores",
        "Table 20: avg 53.6 -> 54.6, short 64.9 -> 65.5",
    ),
    "P6": Claim(
        "06_prolong",
        "Training beyond the evaluation length improves scores at the evaluation length",
        "Table 7: +4B at 512K beats +4B at 64K on every category at 64K",
    ),
    "P7": Claim(
        "06_prolong",
        "Short-only SFT is enough; synthetic long instruction data does not help",
        "Table 8: avg 55.7 (0%), 54.1 (1%), 53.9 (10%), 43.3 (50%)",
    ),
    "P8": Claim(
        "06_prolong",
        "Per-document attention plus minibatch reordering raises throughput; loss averaged over tokens",
        "Table 15: 2770 -> 2780 (+0.4%) -> 3095 (+11.7%) tok/s/GPU on 8 H100s",
    ),
    "P9": Claim(
        "06_prolong",
        "HELMET's categories at several lengths, per category and macro-averaged",
        "Table 10: ProLong 8B avg 60.2 (recall 99.4, RAG 66.0, ICL 81.1, re-rank 33.2, QA 40.8, summ 40.5)",
    ),
}
