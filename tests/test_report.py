"""``xmw report`` gathers the leaderboard, the transfer table, plots and the budget into one HTML page."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from xmw_ray.cli import main  # noqa: E402


def test_report_embeds_tables_plots_and_budget(tmp_path):
    tune = tmp_path / "runs" / "tune" / "s"
    tune.mkdir(parents=True)
    (tune / "leaderboard.md").write_text("# Search s\n\n| trial | model | val_loss |\n|---|---|---|\n| t1 | lstm | 0.12 |\n")
    fig = plt.figure()
    plt.plot([0, 1])
    fig.savefig(tune / "search_trials.png")
    maps = tmp_path / "maps"
    maps.mkdir()
    (maps / "budget.csv").write_text("year,global,60N-90N\n2000,150.5,3.25\n")
    out = tmp_path / "report.html"
    assert main(["report", str(tmp_path / "runs"), str(maps), "--out", str(out)]) == 0
    page = out.read_text()
    assert "<td>lstm</td>" in page and "<td>0.12</td>" in page
    assert "data:image/png;base64," in page
    assert "150.50" in page and "Global wetland CH4 budget" in page


def test_report_of_nothing_is_an_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "r.html")]) == 2
    assert "nothing to report" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()
