"""Keep an executed notebook's text output as a Jupyter front end shows it:
``python scripts/collapse_streams.py NOTEBOOK...`` rewrites each notebook in place.

A progress bar redraws itself with carriage returns, one stream message per update. A front end
shows only the bar's last state, but papermill stores every message, and the rendered book showed
each update as a line of its own (myst-nb joins the messages with newlines). Here the stream
messages between two rich outputs become one stdout and one stderr, with ``\\r`` and ``\\b``
applied as nbclient's ``coalesce_streams`` does: a finished bar is one line, a bar with
``leave=False`` is gone.
"""

import re
import sys

import nbformat

OVERWRITTEN = re.compile(r"[^\n]*\r(?=[^\n])")  # a line's text up to a carriage return
CLEARED = re.compile(r"[ \t]*\r\Z")  # what a bar with leave=False leaves: blanks, then \r
BACKSPACED = re.compile(r"[^\n]\x08")


def collapse(text: str) -> str:
    while BACKSPACED.search(text):
        text = BACKSPACED.sub("", text)
    return CLEARED.sub("", OVERWRITTEN.sub("", text))


def collapse_cell(outputs: list) -> list:
    """One stream per name in each run of stream outputs (a bar's messages and the prints between
    them); a run ends at a figure or table, so text stays on its side of it."""
    kept, streams = [], {}
    for out in outputs:
        if out.output_type != "stream":
            streams = {}
            kept.append(out)
        elif out.name in streams:
            streams[out.name].text += out.text
        else:
            streams[out.name] = out
            kept.append(out)
    for out in kept:
        if out.output_type == "stream":
            out.text = collapse(out.text)
    return [out for out in kept if out.output_type != "stream" or out.text.strip()]


if __name__ == "__main__":
    for path in sys.argv[1:]:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.get("outputs"):
                cell.outputs = collapse_cell(cell.outputs)
        nbformat.write(nb, path)
