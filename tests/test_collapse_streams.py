"""scripts/collapse_streams.py keeps a progress bar's last state, as a Jupyter front end shows it."""

import importlib.util
from pathlib import Path

from nbformat.v4 import new_output

path = Path(__file__).resolve().parent.parent / "scripts" / "collapse_streams.py"
spec = importlib.util.spec_from_file_location("collapse_streams", path)
collapse_streams = importlib.util.module_from_spec(spec)
spec.loader.exec_module(collapse_streams)


def stream(name, text):
    return new_output("stream", name=name, text=text)


def test_a_bar_keeps_its_last_state_and_a_left_bar_is_gone():
    outputs = [
        stream("stderr", "\rtrain:   0%|  | 0/2"),
        stream("stdout", "loaded\n"),
        stream("stderr", "\rtrain:  50%|# | 1/2"),
        stream("stderr", "\rtrain: 100%|##| 2/2"),
        stream("stderr", "\n"),
        stream("stderr", "\reval:  50%|# | 1/2"),
        stream("stderr", "\r                   \r"),  # tqdm's close with leave=False
    ]
    out = collapse_streams.collapse_cell(outputs)
    assert [(o.name, o.text) for o in out] == [
        ("stderr", "train: 100%|##| 2/2\n"),
        ("stdout", "loaded\n"),
    ]


def test_text_stays_on_its_side_of_a_figure():
    figure = new_output("display_data", data={"text/plain": "<Figure>"})
    outputs = [stream("stdout", "before\n"), figure, stream("stdout", "after\n")]
    out = collapse_streams.collapse_cell(outputs)
    assert [o.get("text") for o in out] == ["before\n", None, "after\n"]


def test_backspaces_and_a_bar_only_cell():
    assert collapse_streams.collapse("abc\x08\x08d\n") == "ad\n"
    assert collapse_streams.collapse_cell([stream("stderr", "\rx 1/2\r     \r")]) == []
