"""Long-Context, Reproduced: the shared package."""

import logging
import warnings

from tqdm import TqdmWarning

# Messages that tell a reader of the book nothing (and showed this machine's paths in it), silenced
# here, by message, so that every process that imports lcx is quiet: a chapter's kernel, lcx.bench's
# measuring processes, torchrun's ranks. At import: tqdm.auto falling back to text bars where
# ipywidgets is not installed; bitsandbytes (imported by peft, which transformers' Trainer imports)
# failing to fetch a hub kernel for CPU 4-bit matmuls, for which it has its own. On every QLoRA run:
# transformers' deprecation of the gradient-checkpointing names that peft calls (and lcx.bench,
# for transformers 5.17, which has no other), and peft's failed look-up of a hub config for a model
# loaded from a temporary folder. lcx.chapter.quiet turns off the libraries' progress bars.
warnings.filterwarnings("ignore", "IProgress not found", TqdmWarning, module="tqdm")
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
warnings.filterwarnings(
    "ignore",
    r"`(is_gradient_checkpointing|gradient_checkpointing_enable)` is deprecated",
    FutureWarning,
    module="transformers",
)
warnings.filterwarnings(
    "ignore", "Could not find a config file in .* vocabulary was not modified", UserWarning
)
