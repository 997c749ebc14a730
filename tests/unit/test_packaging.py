"""One installed namespace: the wheel holds `trainhost` and nothing else, and no code imports the folders
by their bare names (`config`, `jobs`, ...), which would clash with a backend's own modules."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile

from tests.helpers.fixtures import REPO

BARE = {"config", "jobs", "worker", "status_api"}


def test_the_wheel_has_one_top_level_package_with_its_data(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(REPO)], check=True, capture_output=True, timeout=300, cwd=tmp_path)
    (wheel,) = tmp_path.glob("trainhost-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"trainhost"}
    for expected in ("trainhost/jobs/producer.py", "trainhost/jobs/pipeline/trainer.py",
                     "trainhost/config/default.yaml", "trainhost/status_api/templates/base.html",
                     "trainhost/worker/cli.py"):
        assert expected in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "trainhost = trainhost.worker.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_no_module_imports_a_folder_by_its_bare_name():
    offenders = []
    for path in REPO.glob("**/*.py"):
        if any(part in {".venv", "build", "var"} for part in path.relative_to(REPO).parts):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            offenders += [f"{path.relative_to(REPO)}:{node.lineno} {n}" for n in names if n.split(".")[0] in BARE]
    assert not offenders
