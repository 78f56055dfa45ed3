"""``xmw simulate sites`` on the real FLUXNET-CH4 files: a simulated flux for every site-day with forcing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from xmw_ray.cli import main
from xmw_ray.data.fluxnet import find_site_sources, iter_site_years, target_days
from xmw_ray.sim.site_forcing import FORCING_COLUMNS, parse_site_rows


def test_every_site_day_with_forcing_gets_a_flux(fluxnet_dir: Path, tmp_path: Path):
    assert main(["simulate", "sites", "--forcing", str(fluxnet_dir), "--out", str(tmp_path)]) == 0
    real = find_site_sources(fluxnet_dir)
    sim = find_site_sources(tmp_path)
    assert sorted(sim.daily_paths) == sorted(real.daily_paths)
    for site, path in real.daily_paths.items():
        given = parse_site_rows(site, pd.read_csv(path, low_memory=False), path)
        out = sim.daily_paths[site]
        got = parse_site_rows(site, pd.read_csv(out), out, extra=("FCH4",))
        np.testing.assert_array_equal(got.dates, given.dates)
        forced = np.all([np.isfinite(given.columns[c]) for c in FORCING_COLUMNS], axis=0)
        assert forced.sum() > 200, site
        np.testing.assert_array_equal(np.isfinite(got.columns["FCH4"]), forced)
        assert np.nanmin(got.columns["FCH4"]) >= 0
        for col in FORCING_COLUMNS:
            np.testing.assert_allclose(got.columns[col], given.columns[col], rtol=1e-5, equal_nan=True)
    # the same reader/prepare path reads the simulated source: a target in mg CH4 m-2 d-1 per site-year
    years = {sy.site: target_days(sy, "FCH4") for sy in iter_site_years(sim, ["FCH4", *FORCING_COLUMNS])}
    assert len(years) == len(real.daily_paths)
    northern_summer = np.nanmean([np.nanmean(t[:, 180:240]) for s, t in years.items() if s.startswith(("FI", "RU"))])
    northern_winter = np.nanmean([np.nanmean(t[:, :60]) for s, t in years.items() if s.startswith(("FI", "RU"))])
    assert northern_summer > 10 * max(northern_winter, 0.1)
