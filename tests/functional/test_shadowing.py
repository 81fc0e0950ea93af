"""A user's ``handlers`` or ``protocols`` module next to their code: one line that says so.

The framework's top-level packages ``handlers`` and ``protocols`` share Python's one module
namespace with the user's code. Each test makes such a clash in a temporary working directory
and runs the command line, a script, or an import as a real process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from server_framework._shadow import hidden_user_module, shadowing

from cli_helpers import TIMEOUT, clean_env, cli

APP = "import server_framework as sf\n\nclass H(sf.EchoHandler):\n    pass\n"


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        check=False,
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def test_nothing_is_shadowed_here() -> None:
    assert shadowing("handlers") is None
    assert shadowing("protocols") is None
    assert hidden_user_module("json") is None


@pytest.mark.parametrize("clash", ["protocols/__init__.py", "handlers.py", "handlers/__init__.py"])
def test_python_m_server_framework_says_what_shadows_and_exits_3(
    tmp_path: Path, clash: str
) -> None:
    (tmp_path / clash).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / clash).write_text("")
    (tmp_path / "app.py").write_text(APP)
    done = run(cli("serve", "app:H", "--tcp", "127.0.0.1:0"), tmp_path)
    assert done.returncode == 3
    name = clash.partition("/")[0].removesuffix(".py")
    shown = f"./{name}/" if "/" in clash else f"./{clash}"
    assert done.stderr.splitlines() == [
        f"server-framework: error: {shown} shadows server_framework's {name!r} package (Python "
        f"imports the first {name!r} on sys.path): rename your module, e.g. to my_{name}, or "
        "run from another directory"
    ]


def test_a_script_next_to_protocols_py_fails_at_import_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "protocols.py").write_text("")
    (tmp_path / "script.py").write_text("import server_framework\n")
    done = run([sys.executable, "script.py"], tmp_path)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        "server_framework._shadow.ShadowedPackageError: ./protocols.py shadows "
        "server_framework's 'protocols' package (Python imports the first 'protocols' on "
        "sys.path): rename your module, e.g. to my_protocols, or run from another directory"
    )


def test_a_namespace_directory_does_not_shadow(tmp_path: Path) -> None:
    (tmp_path / "protocols").mkdir()  # no __init__.py: our regular package wins
    (tmp_path / "script.py").write_text("import server_framework as sf\nprint(sf.LineFramer)\n")
    done = run([sys.executable, "script.py"], tmp_path)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("target", ["handlers:H", "app:H"])
def test_the_script_entry_point_names_a_hidden_user_module(tmp_path: Path, target: str) -> None:
    """``server-framework`` imports our ``handlers`` first; the user's is then never imported."""
    (tmp_path / "handlers.py").write_text(APP)
    (tmp_path / "app.py").write_text("from handlers import H\n")
    script = Path(sys.executable).parent / "server-framework"
    done = run([str(script), "serve", target, "--tcp", "127.0.0.1:0"], tmp_path)
    assert done.returncode == 3
    (line,) = done.stderr.splitlines()
    assert json.loads(line)["event"] == (
        f"TARGET {target}: your ./handlers.py has the name of server_framework's 'handlers' "
        "package, which Python imports instead: rename your module, e.g. to my_handlers"
    )
