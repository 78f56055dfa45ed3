"""docs/architecture.md is the map a clone reads: every path it names must exist, every ``path::Name`` it cites
must be defined there, and the one-way flow of rooms it states must hold in the imports."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
#: ``xmw_ray/…`` paths (files or folders), optionally ``::Name`` (a top-level def, class or assignment).
CITED = re.compile(r"(?P<path>(?:xmw_ray|tests|jobs|configs|cluster|docs)/[\w./-]*\w)(?:::(?P<name>\w+))?")
#: The rooms in the order of the flow: a room may import itself and the rooms before it.
ROOM_ORDER = ["errors", "storage", "data", "sim", "models", "baselines", "config", "train", "transfer", "tune",
              "infer", "report"]


def top_level_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def cited(text: str) -> list[tuple[str, str | None]]:
    return [(m["path"], m["name"]) for m in CITED.finditer(text)]


def missing_citations(text: str, root: Path) -> list[str]:
    """Each cited path that does not exist under ``root`` and each ``path::Name`` not defined in that file."""
    bad = []
    for path, name in cited(text):
        target = root / path
        if not target.exists():
            bad.append(path)
        elif name is not None and (target.suffix != ".py" or name not in top_level_names(target)):
            bad.append(f"{path}::{name}")
    return bad


def test_every_cited_path_and_name_exists() -> None:
    text = DOC.read_text()
    assert len(cited(text)) > 40  # the page is a map of the code, not prose
    assert missing_citations(text, ROOT) == []


def test_a_wrong_citation_is_caught() -> None:
    """The check itself can fail: a moved file and a renamed function are both reported."""
    text = "see `xmw_ray/models/gone.py` and `xmw_ray/storage.py::no_such_function` and `xmw_ray/storage.py::is_url`"
    assert missing_citations(text, ROOT) == ["xmw_ray/models/gone.py", "xmw_ray/storage.py::no_such_function"]


def room_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "xmw_ray" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in ROOM_ORDER else None


#: The one import against the flow, by design: the config tree checks strategy names and parameters against the
#: strategy registry when a config is validated (a function-level import in ``config.py::strategy_catalog``).
ALLOWED_AGAINST_THE_FLOW = {("config.py", "xmw_ray.transfer.registry")}


def imports_against_the_flow() -> list[str]:
    bad = []
    for path in sorted((ROOT / "xmw_ray").rglob("*.py")):
        rel = path.relative_to(ROOT / "xmw_ray")
        room = rel.parts[0].removesuffix(".py")
        if room not in ROOM_ORDER:
            continue  # cli.py and pipeline/ sit on top of every room
        for node in ast.walk(ast.parse(path.read_text())):
            modules = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                       [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
            for module in modules:
                other = room_of(module)
                if (rel.as_posix(), module) in ALLOWED_AGAINST_THE_FLOW:
                    continue
                if other is not None and ROOM_ORDER.index(other) > ROOM_ORDER.index(room):
                    bad.append(f"xmw_ray/{rel.as_posix()} imports {module}")
    return bad


def test_rooms_import_only_rooms_before_them() -> None:
    assert imports_against_the_flow() == []


def test_readme_points_a_clone_at_the_map_in_the_repo() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "docs/architecture.md" in readme
    assert "../shared/DESIGN.md` is the map" not in readme


def torch_io_outside(allowed: str) -> list[str]:
    """Files of the package other than ``allowed`` that call ``torch.save`` or ``torch.load``."""
    found = []
    for path in sorted((ROOT / "xmw_ray").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in {"save", "load"}
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch" and rel != allowed):
                found.append(f"{rel}:{node.lineno}")
    return found


def test_the_checkpoint_format_lives_in_one_module() -> None:
    """What a checkpoint holds is written and read in ``models/checkpoint.py`` alone, so the ``weights_only`` rule
    and the payload's keys cannot drift between a writer and a reader."""
    assert torch_io_outside("xmw_ray/models/checkpoint.py") == []
