"""Long-Context, Reproduced: the shared package."""

import logging
import warnings

from tqdm import TqdmWarning

# Two messages printed while lcx's modules import, before any chapter code runs, which tell a
# reader of the book nothing (and showed this machine's paths in it): tqdm.auto falling back to
# text bars where ipywidgets is not installed, and bitsandbytes (imported by peft, which
# transformers' Trainer imports) failing to fetch a hub kernel for CPU 4-bit matmuls, for which it
# has its own. Only these two are silenced; lcx.chapter.setup quiets the libraries' progress bars.
warnings.filterwarnings("ignore", "IProgress not found", TqdmWarning, module="tqdm")
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
