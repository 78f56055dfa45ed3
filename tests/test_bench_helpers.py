"""The benches' pure helpers (``bench/measure.py``, ``bench/scale.py``): the least-squares line, the peak-memory
sampler, the size list and the per-stage fits. The benches themselves are not tests."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

from fresh_python import run_fresh_python  # noqa: E402
from measure import linear_fit, lower_pss_reading, role_rises  # noqa: E402
from scale import StageResult, fit_lines, parse_sizes  # noqa: E402
from train import whole_epoch_rate  # noqa: E402


def test_linear_fit_recovers_a_line_and_says_how_well():
    x = np.array([1.0, 4.0, 16.0, 64.0])
    assert linear_fit(x, 3.0 + 0.5 * x) == pytest.approx((3.0, 0.5, 1.0))
    intercept, slope, r2 = linear_fit(x, 3.0 + 0.5 * x + np.array([1.0, -1.0, 1.0, -1.0]))
    assert 0.9 < r2 < 1.0 and slope == pytest.approx(0.5, abs=0.05)
    with pytest.raises(ValueError, match="two distinct"):
        linear_fit([2.0, 2.0], [1.0, 3.0])


def _measure_in_fresh_python(body: str) -> list[float]:
    """Run ``body`` inside ``with PeakRSS(interval=0.01) as mem:`` in a new interpreter (a test process's own
    children, a Ray session's workers starting and ending on their own schedule, would move its tree's figures) and
    return ``mem.samples, mem.driver, mem.tree``."""
    code = ("import subprocess, sys, time\n"
            "import numpy as np\n"
            f"sys.path.insert(0, {str(BENCH)!r})\n"
            "from measure import PeakRSS\n"
            f"{body}\n"
            "print(mem.samples, mem.driver, mem.tree)\n")
    return [float(x) for x in run_fresh_python(code).split()]


def test_peak_rss_sees_a_temporary_allocation_that_is_gone_at_the_end():
    samples, driver, tree = _measure_in_fresh_python(
        "with PeakRSS(interval=0.01) as mem:\n"
        "    block = np.ones(200 * 2**20 // 8)  # 200 MiB, touched\n"
        "    time.sleep(0.2)\n"
        "    del block")
    assert samples >= 5
    assert 150 < driver < 400, driver
    assert tree >= driver - 1, (tree, driver)


def test_a_child_that_ends_inside_takes_nothing_from_the_trees_rise():
    # A child holding 300 MiB at the start ends inside the block while the measuring process allocates 200 MiB: the
    # tree's total minus its total at the start gave a rise of 0 (200 - 300, floored), which failed the test above
    # in a CI run, where one of the test process's Ray workers exited meanwhile.
    samples, driver, tree = _measure_in_fresh_python(
        "child = subprocess.Popen([sys.executable, '-c', 'import sys, numpy as np; a = np.ones(300 * 2**20 // 8); "
        "print(1, flush=True); sys.stdin.read()'], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)\n"
        "assert child.stdout.readline().strip() == '1'\n"
        "with PeakRSS(interval=0.01) as mem:\n"
        "    child.stdin.close()\n"
        "    child.wait(timeout=30)\n"
        "    block = np.ones(200 * 2**20 // 8)\n"
        "    time.sleep(0.3)\n"
        "    del block")
    assert 150 < driver < 400, driver
    assert tree >= driver - 1, (tree, driver)


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs POSIX shared memory in /dev/shm (Linux)")
def test_tree_pss_counts_a_page_shared_by_two_processes_once_where_rss_counts_it_twice():
    """Ray's object store is shared memory mapped by the raylet and each worker reading a block: summed RSS
    counts it per process, PSS once (bench/scale.py's tree memory line was RSS only). The child is a fresh
    interpreter (not a fork, whose copy-on-write pages of a large test process would add to both figures), and so is
    the measuring process: a test process's own children (a Ray session's workers, started and ending on their own
    schedule) would move its tree's figures by hundreds of MiB."""
    size = 160 * 2**20
    reader = ("import mmap, sys\n"
              "f = open('/dev/shm/' + sys.argv[1], 'rb')\n"
              "m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)\n"
              "sum(m[i] for i in range(0, len(m), 4096))\n"
              "print('ready', flush=True)\n"
              "sys.stdin.read()\n")
    measurer = ("import subprocess, sys, time\n"
                "from multiprocessing import shared_memory\n"
                f"sys.path.insert(0, {str(BENCH)!r})\n"
                "from measure import PeakRSS\n"
                f"size, reader = {size}, {reader!r}\n"
                "shared = shared_memory.SharedMemory(create=True, size=size)\n"
                "try:\n"
                "    with PeakRSS(interval=0.01, pss_every=5) as mem:\n"
                "        chunk = b'x' * 2**20\n"
                "        for i in range(size // len(chunk)):\n"
                "            shared.buf[i * len(chunk):(i + 1) * len(chunk)] = chunk\n"
                "        child = subprocess.Popen([sys.executable, '-c', reader, shared.name], stdin=subprocess.PIPE,\n"
                "                                 stdout=subprocess.PIPE, text=True)\n"
                "        assert child.stdout.readline().strip() == 'ready'\n"
                "        time.sleep(0.5)\n"
                "        child.communicate('')\n"
                "finally:\n"
                "    shared.close()\n"
                "    shared.unlink()\n"
                "import json\n"
                "print(mem.tree, mem.tree_pss)\n"
                "print(json.dumps(mem.by_role))\n")
    figures, roles = run_fresh_python(measurer).splitlines()
    tree, tree_pss = map(float, figures.split())
    mib = size / 2**20
    assert tree > 1.7 * mib, tree  # counted in both processes
    assert 0.7 * mib < tree_pss < 1.3 * mib, tree_pss  # counted once (+ the child interpreter's own)
    # where it is, by process role: the page is split between the measuring process and the reading child
    roles = json.loads(roles)
    child = {r: m for r, m in roles.items() if r != "driver"}
    assert roles["driver"] > 0.3 * mib and max(child.values()) > 0.3 * mib, roles
    # each process's rise over its own start: the new child brings its whole PSS, the driver only its growth
    assert sum(roles.values()) < 1.3 * mib + 60, roles


class _SharingPages:
    """Two processes' PSS while one maps, page after page, 160 MiB the other holds: each reading of a process
    advances the mapping by ``step`` MiB (a loaded machine reads slowly). The pair's true PSS stays 160 MiB."""

    def __init__(self, step: float, until: float = 160.0) -> None:
        self.mapped, self.step, self.until = 0.0, step, until
        self.procs = [type("P", (), {"pid": 1})(), type("P", (), {"pid": 2})()]

    def pss_of(self, proc) -> float:
        self.mapped = min(self.mapped + self.step, self.until)
        return 160.0 - self.mapped / 2 if proc.pid == 1 else self.mapped / 2


def test_a_pss_reading_never_counts_a_page_moving_between_processes_twice():
    """bench/scale.py's tree PSS: the holder read before the mapper's pages counted whole in both (the suite once
    saw 229.8 MiB for a 160 MiB page): read both ways, the lower total is kept, and a settled tree is read exactly."""
    moving = _SharingPages(step=20.0)  # still mapping through every try
    total, per_process = lower_pss_reading(moving.procs, moving.pss_of, lambda p: f"p{p.pid}")
    assert total <= 160.0
    assert set(per_process) == {1, 2} and per_process[1][0] == "p1"
    once = _SharingPages(step=20.0)  # the premise: one forward reading (the old way) counts moving pages twice
    assert sum(once.pss_of(p) for p in once.procs) > 160.0
    settles = _SharingPages(step=20.0, until=60.0)  # done mapping after three readings: the later tries agree
    total, per_process = lower_pss_reading(settles.procs, settles.pss_of, lambda p: "x")
    assert total == 160.0 and per_process == {1: ("x", 130.0), 2: ("x", 30.0)}
    ended = _SharingPages(step=0.0)  # a process that ended between readings is left out of both
    total, per_process = lower_pss_reading(ended.procs, lambda p: None if p.pid == 2 else 100.0, lambda p: "x")
    assert total == 100.0 and set(per_process) == {1}


def test_role_rises_count_each_process_from_its_own_start_not_its_roles():
    """A process present at the start that takes another role (an idle Ray worker becoming an actor) brings only
    its growth to the new role; a process started since brings all of it."""
    start = {1: ("ray::IDLE", 300.0), 2: ("driver", 500.0)}
    now = {1: ("ray::FluxWorker", 340.0), 2: ("driver", 510.0), 3: ("ray::IDLE", 200.0)}
    assert role_rises(start, now) == {"ray::FluxWorker": 40.0, "driver": 10.0, "ray::IDLE": 200.0}



def test_whole_epoch_rate_cancels_start_up_and_refuses_a_difference_lost_in_its_noise():
    # 5 more epochs of 1,000 samples took 10 s more than the 1-epoch run: 500 samples/s.
    assert whole_epoch_rate(1000, 6, 20.0, 30.0) == pytest.approx(500.0)
    # On an H200 the 6-epoch run once took less wall time than the 1-epoch run: that is no throughput figure.
    assert whole_epoch_rate(4560, 6, 26.4, 25.7) is None
    assert whole_epoch_rate(4560, 6, 25.0, 25.3) is None


def test_sizes_are_parsed_and_refused_in_one_line():
    assert parse_sizes("2x1, 0.5x16") == [(2.0, 1), (0.5, 16)]
    for bad in ("2", "0.7x1", "1x0", "ax2"):
        with pytest.raises(ValueError, match="--sizes"):
            parse_sizes(bad)


def test_fits_are_per_scaling_stage_against_cell_years():
    rows = []
    for cell_years in (1000, 4000, 16000):
        rows.append(StageResult("s", "infer", cell_years, cell_years * 365, 2.0 + 0.001 * cell_years, 10.0, 300.0,
                                300.0))
        rows.append(StageResult("s", "train", cell_years, 50 * 64 * 365, 5.0, 50.0, 200.0, 200.0))
    lines = fit_lines(rows)
    assert set(lines) == {"infer"}  # training does fixed work: no line against the data's size
    assert lines["infer"]["fixed_s"] == pytest.approx(2.0)
    assert lines["infer"]["us_per_cell_year"] == pytest.approx(1000.0)
    assert lines["infer"]["mib_per_1000_cell_years"] == pytest.approx(0.0, abs=1e-9)
    assert lines["infer"]["mem_base_mib"] == pytest.approx(300.0)


def test_cpu_by_role_gives_a_busy_child_its_cpu_seconds_and_names_the_driver():
    """bench/train.py's profile: CPU seconds per process role while a block ran (a child started inside counts
    all of its CPU time, also when it ended before the block did: a Ray Train worker ends before its run returns).
    Measured in a fresh interpreter: a test process's own Ray children would add roles of their own."""
    burn = ("import sys, time\nt = time.process_time()\nwhile time.process_time() - t < 0.6:\n    pass\n"
            "print('done', flush=True)\nsys.stdin.read()\n")
    measurer = ("import json, subprocess, sys, time\n"
                f"sys.path.insert(0, {str(BENCH)!r})\n"
                "from measure import CpuByRole\n"
                f"burn = {burn!r}\n"
                "with CpuByRole(interval=0.05) as cpu:\n"
                "    child = subprocess.Popen([sys.executable, '-c', burn], stdin=subprocess.PIPE,\n"
                "                             stdout=subprocess.PIPE, text=True)\n"
                "    assert child.stdout.readline().strip() == 'done'\n"
                "    time.sleep(0.2)  # a reading after its work\n"
                "    child.communicate('')  # ended before the block's end\n"
                "print(json.dumps({'wall': cpu.wall, 'roles': cpu.by_role}))\n")
    got = json.loads(run_fresh_python(measurer))
    roles = got["roles"]
    assert got["wall"] >= 0.5 and "driver" in roles
    others = {r: sec for r, sec in roles.items() if r != "driver"}
    assert len(others) == 1 and list(others.values())[0] >= 0.55, roles
    assert roles["driver"] < 0.5, roles  # the measuring process only waited


def test_the_scale_bench_deletes_only_work_folders_it_made(tmp_path):
    """``bench/scale.py --out`` is the user's: a size's folder there is emptied only when the bench made it (its
    marker), else refused and kept (the bench deleted ``--out/<size>`` whatever it held)."""
    from scale import claim_work_folder

    mine = tmp_path / "0.5x16"
    mine.mkdir()
    (mine / "thesis.txt").write_text("mine")
    with pytest.raises(SystemExit, match="was not made by bench/scale.py"):
        claim_work_folder(mine)
    assert (mine / "thesis.txt").read_text() == "mine"
    ours = claim_work_folder(tmp_path / "10x2")
    (ours / "grid.zarr").mkdir()
    assert claim_work_folder(ours) == ours and sorted(p.name for p in ours.iterdir()) == [".xmw-bench-scale"]
