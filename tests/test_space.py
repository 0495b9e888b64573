"""Tests of space_config/: the Space card and the deploy command.

The card is read back with huggingface_hub's own parsers; the deploy runs as a real subprocess
(dry run, no token, unreachable Hub). Only the upload call itself is replaced by a recording
stand-in (there is no Hub to upload to from here); everything around it is the real code.

    .venv/bin/python -m pytest tests/test_space.py -q
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import SpaceCard, metadata_load
from packaging.requirements import Requirement

from space_config import deploy
from space_config.card import METADATA, pinned_version, render_card

ROOT = Path(__file__).resolve().parent.parent
FAKE_TOKEN = "hf_" + "FakeTokenForTests" * 2 + "x7Q9"     # looks like a real one, recognisable
HUB_COLOURS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}


def gradio_pin() -> str:
    """requirements.txt's gradio version, parsed by packaging (independently of card.py)."""
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            req = Requirement(line)
            if req.name == "gradio":
                (spec,) = req.specifier
                assert spec.operator == "==", f"gradio must be pinned with ==, got {spec}"
                return spec.version
    raise AssertionError("requirements.txt does not pin gradio")


def weights_folder() -> Path:
    """The shipped weights, or the smoke model while the real training runs."""
    for folder in (ROOT / "weights", ROOT / "outputs" / "smoke"):
        if (folder / "model.safetensors").is_file() and (folder / "config.json").is_file():
            return folder
    pytest.skip("no trained weights yet (weights/ or outputs/smoke)")


def require_app() -> None:
    if not (ROOT / "app.py").is_file():
        pytest.skip("app.py not written yet")


def run_deploy(*args: str, env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """`python -m space_config.deploy ARGS` as a user runs it, with a clean token environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    return subprocess.run([sys.executable, "-m", "space_config.deploy", *args], cwd=cwd,
                          env=base | {"PYTHONPATH": str(ROOT)} | (env or {}),
                          capture_output=True, text=True, timeout=120)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tiny_project(tmp_path: Path) -> Path:
    """A small project in the repository's layout, with an import chain the parser must follow."""
    root = tmp_path / "project"
    (root / "explain").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "outputs").mkdir()
    (root / "weights" / "evaluation").mkdir(parents=True)
    (root / "app.py").write_text("import os\nimport numpy as np\nimport model\nfrom explain import METHODS\n")
    (root / "model.py").write_text("from helpers import helper\n")
    (root / "helpers.py").write_text("def helper():\n    return 1\n")
    (root / "explain" / "__init__.py").write_text("from .gradcam import grad_cam\nMETHODS = {'gc': grad_cam}\n")
    (root / "explain" / "gradcam.py").write_text("from ..helpers import helper\ndef grad_cam():\n    pass\n")
    (root / "unrelated.py").write_text("import model\n")
    (root / "tests" / "test_app.py").write_text("import app\n")
    (root / "outputs" / "junk.py").write_text("x = 1\n")
    (root / ".env").write_text(f"HF_TOKEN={FAKE_TOKEN}\n")
    shutil.copy(ROOT / "requirements.txt", root / "requirements.txt")
    (root / "weights" / "config.json").write_text("{}")
    (root / "weights" / "model.safetensors").write_bytes(b"\0" * 64)
    (root / "weights" / "README.md").write_text("model card\n")
    (root / "weights" / "training_history.json").write_text("[]")
    (root / "weights" / "evaluation" / "metrics.json").write_text("{}")
    (root / "weights" / "evaluation" / "trust.json").write_text("{}")
    return root


# ---------------------------------------------------------------------------------------------
# The card
# ---------------------------------------------------------------------------------------------

def test_card_parses_with_the_hubs_reader_and_pins_the_tested_gradio(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(render_card(weights=weights_folder()))
    meta = metadata_load(readme)
    card = SpaceCard.load(readme)
    assert meta["sdk"] == card.data.sdk == "gradio"
    assert meta["sdk_version"] == card.data.sdk_version == gradio_pin()
    assert meta["app_file"] == "app.py"
    assert str(meta["python_version"]).startswith("3.11")
    assert meta["license"] == "mit"
    assert meta["datasets"] == ["zalando-datasets/fashion_mnist"]
    assert len(meta["models"]) == 1 and "/" in meta["models"][0]
    assert meta["colorFrom"] in HUB_COLOURS and meta["colorTo"] in HUB_COLOURS
    assert meta["title"] and meta["emoji"]
    assert 0 < len(meta["short_description"]) <= 60, "the Hub caps short_description at 60 characters"
    assert "# " in card.text and len(card.text.strip()) > 200, "the card needs a body for visitors"


def test_card_reports_the_accuracy_from_metrics_json():
    import json
    folder = weights_folder()
    metrics = json.loads((folder / "evaluation" / "metrics.json").read_text())
    assert f"{metrics['accuracy']:.2%}" in render_card(weights=folder)


def test_model_id_flows_into_the_cards_models_field(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(render_card(model_id="someone/other-model"))
    assert metadata_load(readme)["models"] == ["someone/other-model"]


def test_pinned_version_refuses_an_unpinned_package(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text("gradio>=6\ntorch==2.14.1\n")
    assert pinned_version("torch", req) == "2.14.1"
    with pytest.raises(ValueError, match="gradio"):
        pinned_version("gradio", req)


def test_metadata_has_no_sdk_version_of_its_own():
    # One source of truth: the version comes from requirements.txt, never typed into card.py.
    assert "sdk_version" not in METADATA


# ---------------------------------------------------------------------------------------------
# Which files the Space gets
# ---------------------------------------------------------------------------------------------

def test_local_imports_follow_the_chain_and_nothing_else(tiny_project):
    found = {p.relative_to(tiny_project.resolve()).as_posix() for p in deploy.local_imports("app.py", tiny_project)}
    assert found == {"app.py", "model.py", "helpers.py", "explain/__init__.py", "explain/gradcam.py"}


def test_plan_of_a_project_has_code_weights_card_and_no_junk(tiny_project):
    paths = {f.path_in_repo for f in deploy.space_plan(tiny_project)}
    assert paths == {"app.py", "model.py", "helpers.py", "explain/__init__.py", "explain/gradcam.py",
                     "requirements.txt", "README.md", "weights/config.json", "weights/model.safetensors",
                     "weights/training_history.json", "weights/evaluation/metrics.json",
                     "weights/evaluation/trust.json"}


def test_the_shipped_weights_carry_the_neighbours_index_and_the_base_runs_history():
    # The app shows nearest training images and the whole recipe's curves only from these files.
    paths = {f.path_in_repo for f in deploy.weight_files(ROOT / "weights")}
    assert {"weights/neighbours.safetensors", "weights/neighbours.json",
            "weights/base_training_history.json"} <= paths


def test_missing_weights_stop_the_plan_with_a_clear_message(tiny_project):
    (tiny_project / "weights" / "model.safetensors").unlink()
    with pytest.raises(deploy.DeployError, match="model.safetensors is missing"):
        deploy.space_plan(tiny_project)


def test_a_module_holding_a_token_stops_the_deploy_without_showing_it(tiny_project):
    (tiny_project / "helpers.py").write_text(f"TOKEN = '{FAKE_TOKEN}'\n")
    with pytest.raises(deploy.DeployError, match="helpers.py") as e:
        deploy.space_plan(tiny_project)
    assert FAKE_TOKEN not in str(e.value)


def test_secret_looking_names_are_refused():
    for name in (".env", "config/.env.local", "hf_token.txt", "id_ed25519", "server.pem", "client_secret.json"):
        with pytest.raises(deploy.DeployError, match="secret"):
            deploy.check_no_secrets([deploy.SpaceFile(name, None, b"harmless")])


def test_the_exact_token_is_refused_even_in_an_unusual_format(tiny_project):
    files = [deploy.SpaceFile("notes.md", None, b"token: abc123-not-hub-shaped")]
    with pytest.raises(deploy.DeployError, match="notes.md"):
        deploy.check_no_secrets(files, token="abc123-not-hub-shaped")


def test_the_dry_run_space_runs_app_py_from_its_own_files(tmp_path):
    """Write the planned files to an empty folder and import app.py there: nothing may be missing."""
    require_app()
    space = tmp_path / "space"
    for f in deploy.space_plan(ROOT, weights_folder()):
        (space / f.path_in_repo).parent.mkdir(parents=True, exist_ok=True)
        (space / f.path_in_repo).write_bytes(f.read())
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MODEL_ID")} | {"HF_HUB_OFFLINE": "1"}
    check = ("import sys, app; import pathlib; "
             "assert pathlib.Path(app.__file__).resolve().parent == pathlib.Path.cwd().resolve(), app.__file__; "
             "print('demo' in vars(app))")
    result = subprocess.run([sys.executable, "-c", check], cwd=space, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("True"), "app.py must define `demo` at module level"


def test_dry_run_lists_a_complete_space_and_the_card():
    require_app()
    folder = weights_folder()
    result = run_deploy("--dry-run", "--weights", str(folder))
    assert result.returncode == 0, result.stderr
    listed = {line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ")}
    imported = {p.relative_to(ROOT).as_posix() for p in deploy.local_imports("app.py", ROOT)}
    assert imported >= {"app.py", "model.py"}, imported
    assert any(p.startswith("explain/") for p in imported), "app.py should import explain/"
    assert listed >= imported | {"requirements.txt", "README.md", "weights/config.json",
                                 "weights/model.safetensors", "weights/evaluation/metrics.json"}
    for path in listed:
        assert not path.startswith(("tests/", ".venv/", "outputs/", "bench/", ".git")), path
        assert "__pycache__" not in path and not path.endswith((".pyc", ".env")), path
    assert f"sdk_version: {gradio_pin()}" in result.stdout
    assert "app_file: app.py" in result.stdout


# ---------------------------------------------------------------------------------------------
# Tokens and failures: one clear line, non-zero exit, the token never shown
# ---------------------------------------------------------------------------------------------

def test_dry_run_never_prints_the_token(tiny_project):
    result = run_deploy("--dry-run", "--root", str(tiny_project), env={"HF_TOKEN": FAKE_TOKEN})
    assert result.returncode == 0, result.stderr
    assert "Token: found" in result.stdout
    assert FAKE_TOKEN not in result.stdout + result.stderr


def test_without_a_token_one_clear_line_and_a_non_zero_exit(tiny_project, tmp_path):
    result = run_deploy("--root", str(tiny_project), "--space-id", "me/space",
                        env={"HF_HOME": str(tmp_path / "empty-hf-home")})   # no saved login either
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "token" in lines[0].lower(), result.stderr
    assert result.stdout == ""


def test_unreachable_hub_one_clear_line_without_the_token(tiny_project):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    result = run_deploy("--root", str(tiny_project), "--space-id", "me/space",
                        env={"HF_TOKEN": FAKE_TOKEN, "HF_ENDPOINT": endpoint})
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "me/space" in lines[0] and endpoint in lines[0]
    assert "Traceback" not in result.stderr
    assert FAKE_TOKEN not in result.stdout + result.stderr


def test_space_id_is_required_for_a_real_deploy(tiny_project):
    result = run_deploy("--root", str(tiny_project))
    assert result.returncode != 0 and "--space-id" in result.stderr


class RecordingApi:
    """Stands in for HfApi at the network boundary only: records what would be sent."""

    def __init__(self, existing=("app.py", ".gitattributes", "old_module.py")):
        self.calls, self.existing = [], list(existing)

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def list_repo_files(self, repo_id, **kwargs):
        return self.existing

    def create_commit(self, repo_id, operations, **kwargs):
        self.operations = list(operations)
        self.calls.append(("create_commit", repo_id, kwargs))
        return "https://huggingface.co/spaces/me/space/commit/0"

    def add_space_variable(self, repo_id, key, value, **kwargs):
        self.calls.append(("add_space_variable", repo_id, {"key": key, "value": value}))


def _uploaded(api: RecordingApi) -> dict[str, bytes]:
    from huggingface_hub import CommitOperationAdd
    out = {}
    for op in api.operations:
        if isinstance(op, CommitOperationAdd):
            src = op.path_or_fileobj
            out[op.path_in_repo] = src if isinstance(src, bytes) else Path(src).read_bytes()
    return out


def test_deploy_sends_the_plan_in_one_commit_and_never_the_token(tiny_project, monkeypatch, capsys):
    from huggingface_hub import CommitOperationDelete
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    api = RecordingApi()
    assert deploy.main(["--root", str(tiny_project), "--space-id", "me/space"], api=api) == 0
    name, repo, kwargs = api.calls[0]
    assert (name, repo, kwargs["repo_type"], kwargs["space_sdk"], kwargs["exist_ok"]) == \
           ("create_repo", "me/space", "space", "gradio", True)
    uploaded = _uploaded(api)
    assert set(uploaded) == {f.path_in_repo for f in deploy.space_plan(tiny_project)}
    assert ".env" not in uploaded and not any(p.startswith(("tests/", "outputs/")) for p in uploaded)
    assert all(FAKE_TOKEN.encode() not in data for data in uploaded.values())
    deleted = {op.path_in_repo for op in api.operations if isinstance(op, CommitOperationDelete)}
    assert deleted == {"old_module.py"}, "stale files go, .gitattributes and current files stay"
    assert not any(c[0] == "add_space_variable" for c in api.calls)
    out = capsys.readouterr()
    assert FAKE_TOKEN not in out.out + out.err and "me/space" in out.out


def test_deploy_with_a_model_id_sets_the_space_variable(tiny_project, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    api = RecordingApi(existing=())
    assert deploy.main(["--root", str(tiny_project), "--space-id", "me/space", "--model-id", "me/model"], api=api) == 0
    assert ("add_space_variable", "me/space", {"key": "MODEL_ID", "value": "me/model"}) in api.calls
    uploaded = _uploaded(api)
    assert "weights/model.safetensors" in uploaded, "the committed weights stay as app.py's fallback"
    assert b"me/model" in uploaded["README.md"]


def test_a_failing_upload_is_one_line_with_the_token_masked(tiny_project, monkeypatch, capsys):
    class Refusing(RecordingApi):
        def create_commit(self, repo_id, operations, **kwargs):
            raise PermissionError(f"401 Unauthorized for token {FAKE_TOKEN}\nmore detail")
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    assert deploy.main(["--root", str(tiny_project), "--space-id", "me/space"], api=Refusing()) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "401" in err and FAKE_TOKEN not in err
