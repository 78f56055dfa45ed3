"""``xmw report`` gathers the leaderboard, the transfer table, plots and the budget into one HTML page."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from xmw_ray.cli import main  # noqa: E402


def test_report_embeds_tables_plots_and_budget(tmp_path):
    tune = tmp_path / "runs" / "tune" / "s"
    tune.mkdir(parents=True)
    (tune / "leaderboard.csv").write_text("trial,model,val_loss\n1,lstm,0.12\n")  # some of its columns, by hand
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


def test_report_replaces_its_own_page_but_never_another_file(tmp_path, capsys):
    maps = tmp_path / "maps"
    maps.mkdir()
    (maps / "budget.csv").write_text("year,global\n2000,150.5\n")
    out = tmp_path / "report.html"
    assert main(["report", str(maps), "--out", str(out)]) == 0
    assert main(["report", str(maps), "--out", str(out)]) == 0  # its own page: replaced
    old_page = tmp_path / "before-the-mark.html"  # a page of an earlier version (no generator mark)
    old_page.write_text(out.read_text().replace("<meta name='generator' content='xmw report'>", ""))
    assert main(["report", str(maps), "--out", str(old_page)]) == 0
    for name, text in (("index.html", "<html><body>my site</body></html>"), ("README.md", "# notes\n")):
        theirs = tmp_path / name
        theirs.write_text(text)
        capsys.readouterr()
        assert main(["report", str(maps), "--out", str(theirs)]) == 2
        assert f"{theirs}: exists and is not a page of xmw report" in capsys.readouterr().err
        assert theirs.read_text() == text


def test_files_that_only_share_a_name_with_ours_are_left_off_with_a_note(tmp_path, capsys):
    """The folders are searched by file name: a user's own budget.csv, a truth.json of another tool or a
    leaderboard.csv of another program must neither end the report with a traceback nor hide what is ours."""
    maps = tmp_path / "maps"
    maps.mkdir()
    (maps / "budget.csv").write_text("year,global\n2000,150.5\n")
    theirs = {tmp_path / "notes" / "budget.csv": "year,global\n2000,abc\n",
              tmp_path / "other" / "truth.json": "not json\n",
              tmp_path / "ml" / "leaderboard.csv": "x,y\n1,2\n",
              tmp_path / "exp" / "summary.csv": "x,y\n1,2\n"}
    for path, text in theirs.items():
        path.parent.mkdir()
        path.write_text(text)
    (tmp_path / "exp" / "results.csv").write_text("x,y\n1,2\n")
    out = tmp_path / "report.html"
    capsys.readouterr()
    assert main(["report", str(tmp_path), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for path in theirs:
        assert f"xmw report: {path}: left off the page" in err, err
    assert "150.50" in out.read_text()
    capsys.readouterr()
    assert main(["report", str(tmp_path / "notes"), "--out", str(tmp_path / "notes.html")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and "left off the page" in lines[0] and lines[1].startswith("xmw: error: "), lines
    assert not (tmp_path / "notes.html").exists()


def test_a_damaged_run_config_leaves_the_rest_of_the_transfer_set_up(tmp_path, capsys):
    """A transfer run's ``config.json`` cut short loses only its split's line, not the experiment's set-up, and
    is not blamed on ``results.csv``."""
    exp = tmp_path / "transfer"
    (exp / "runs" / "scratch-lstm" / "best").mkdir(parents=True)
    (exp / "runs" / "scratch-lstm" / "best" / "config.json").write_text('{"data": {"spl')
    row = "scratch,lstm,temporal,1.0,0,0.5,runs/scratch-lstm/best"
    (exp / "results.csv").write_text(f"strategy,model,setting,fraction,seed,test_nse,checkpoint\n{row}\n")
    (exp / "summary.csv").write_text("strategy,model,setting,fraction,seeds,test_nse,test_rmse,test_kge\n"
                                     "scratch,lstm,temporal,1.0,1,0.5,30.0,0.4\n")
    capsys.readouterr()
    assert main(["report", str(exp), "--out", str(tmp_path / "r.html")]) == 0
    assert "left off the page" not in capsys.readouterr().err
    page = (tmp_path / "r.html").read_text()
    assert "transfer experiment" in page and "strategies scratch" in page


def test_report_of_nothing_is_an_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "r.html")]) == 2
    assert "nothing to report" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def _ensemble_maps(folder, members: int | None) -> None:
    """A flux-map store's parts the report reads: its attributes, a commit marker, budget.csv and the plots."""
    import json

    (folder / "_done").mkdir(parents=True)
    (folder / "plots").mkdir()
    attrs = {"xmw_format": "xmw-fluxmaps-v1", "grid_cells": 5, "grid_resolution_deg": 10.0, "years": [2000],
             "model": json.dumps({"name": "ensemble", "members": [{"name": "lstm"}] * 3})}
    if members:
        attrs["ensemble_members"] = members
    (folder / "zarr.json").write_text(json.dumps({"attributes": attrs}))
    (folder / "budget.csv").write_text("year,global,global_member_min,global_member_max,global_member_std\n"
                                       "2000,150.5,140.25,161.75,8.5\n")
    fig = plt.figure()
    plt.plot([0, 1])
    fig.savefig(folder / "plots" / "annual_spread_all_years.png")
    plt.close(fig)


def test_report_shows_an_ensembles_spread_map_and_budget_range(tmp_path):
    maps = tmp_path / "maps"
    _ensemble_maps(maps, members=3)
    out = tmp_path / "report.html"
    assert main(["report", str(maps), "--out", str(out)]) == 0
    page = out.read_text()
    assert "mean of the ensemble&#x27;s 3 members" in page and "spread" in page
    assert "standard deviation across the members of their annual-mean flux" in page  # the spread map's caption
    assert "global_member_min" in page and "140.25" in page and "161.75" in page


def test_report_of_ensemble_maps_made_without_the_spread_says_so(tmp_path):
    maps = tmp_path / "maps"
    _ensemble_maps(maps, members=None)
    (maps / "plots" / "annual_spread_all_years.png").unlink()
    out = tmp_path / "report.html"
    assert main(["report", str(maps), "--out", str(out)]) == 0
    page = out.read_text()
    assert "made without the members&#x27; spread" in page
    assert "standard deviation across the members" not in page
