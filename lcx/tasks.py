"""Long-context probe tasks, generated offline at any length in tokens.

Passkey retrieval (Mohtashami & Jaggi, 2023; the PI paper §3.3; Llama 2 Long footnote 4): a few
random digits hidden at a controlled depth in repeated filler sentences, asked for at the end.
Tiny models learn the format only when it is in their training mix, so every task also has a
training variant (the same generator with disjoint seeds) and marks its answer tokens so the
trainer can up-weight them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# The PI paper's intro is three sentences; one keeps the prompt short enough for tiny windows.
PASSKEY_INTRO = "A pass key is hidden in the text below. Remember it."
PASSKEY_FILLER = (
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
)
PASSKEY_QUESTION = "What is the pass key? The pass key is"
TRAIN_SEED_OFFSET, TEST_SEED_OFFSET = 0, 10_000_000  # disjoint seed ranges for train and test


@dataclass
class Example:
    prompt_ids: list[int]
    answer_ids: list[int]
    answer: str
    meta: dict


def _passkey_parts(tokenizer, key: str):
    enc = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    head = [tokenizer.bos_token_id, *enc(PASSKEY_INTRO)]
    needle = enc(f" The pass key is {key}. Remember it. {key} is the pass key.")
    return head, needle, enc(" " + PASSKEY_QUESTION), enc(" " + key), enc(" " + PASSKEY_FILLER)


def passkey_min_length(tokenizer, digits: int = 5) -> int:
    """The shortest passkey example (no filler) in tokens."""
    head, needle, tail, answer, _ = _passkey_parts(tokenizer, "0" * digits)
    return len(head) + len(needle) + len(tail) + len(answer)


def passkey(
    tokenizer, length: int, depth: float, seed: int, digits: int = 5, split: str = "test"
) -> Example:
    """A passkey example of ``length`` tokens (prompt + answer) with the key at ``depth`` in [0, 1].

    The filler is repeated whole sentences, cut to hit the length: the total is exact when the
    filler allows, and within a few tokens otherwise.
    """
    if not 0 <= depth <= 1:
        raise ValueError(f"depth={depth!r} must be in [0, 1]")
    rng = random.Random(seed + (TEST_SEED_OFFSET if split == "test" else TRAIN_SEED_OFFSET))
    key = "".join(rng.choice("0123456789") for _ in range(digits))
    head, needle, tail, answer, filler_unit = _passkey_parts(tokenizer, key)
    budget = length - len(head) - len(needle) - len(tail) - len(answer)
    if budget < 0:
        raise ValueError(
            f"length={length} is too short for a passkey prompt ({length - budget} tokens minimum)"
        )
    filler = (filler_unit * (budget // len(filler_unit) + 1))[:budget]
    cut = int(round(depth * len(filler)))
    # move the cut to a sentence end so the needle never splits a word
    ends = [i + 1 for i, t in enumerate(filler) if tokenizer.decode([t]).endswith(".")] or [0]
    cut = min([0, *ends], key=lambda e: abs(e - cut))
    prompt = head + filler[:cut] + needle + filler[cut:] + tail
    return Example(
        prompt, answer, key, {"task": "passkey", "length": length, "depth": depth, "seed": seed}
    )
