"""lcx.plots: figures draw what they are given."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from lcx import plots  # noqa: E402


def test_lines_draws_each_column_dashed_where_asked_with_the_marks():
    table = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]}, index=[0.5, 2.0])
    fig = plots.lines({"left": table, "right": table}, "score", mark=(1, 8), dashed=["b"])
    for ax in fig.axes:
        data = {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}
        assert list(data["a"].get_xdata()) == [0.5, 2.0] and list(data["b"].get_ydata()) == [3, 4]
        assert (data["a"].get_linestyle(), data["b"].get_linestyle()) == ("-", "--")
        verticals = [ln.get_xdata()[0] for ln in ax.get_lines() if ln.get_linestyle() == ":"]
        assert verticals == [1, 8]
    plt.close(fig)


def test_publish_saves_the_figure_and_closes_it(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    plots.publish(fig, tmp_path, "curve", "fig_curve")
    assert (tmp_path / "curve.png").stat().st_size > 0
    assert not plt.fignum_exists(fig.number)
