"""Create or update the project's Hugging Face Space: upload exactly the files the app needs.

    python -m space_config.deploy --dry-run                        # list files, print the card; offline
    python -m space_config.deploy --space-id <user>/fashion-mnist-explainer
    python -m space_config.deploy --space-id <user>/fashion-mnist-explainer --model-id <user>/fashion-cnn

What goes up: app.py, the example photos, every local module app.py imports (found by parsing the imports, recursively,
so the list cannot drift from the code), requirements.txt (the Space pip-installs it; torch comes
from PyPI there), the weights folder as `weights/` (config.json, model.safetensors,
training_history.json, evaluation/: the Mistakes, Model and Trust views read them) and the card
from `card.py` as the Space's README.md. With `--model-id`, the Space variable MODEL_ID points the
app at that pushed model repo; the weights still go up, because app.py serves them when the Hub
repo cannot be used. Nothing else: no tests, caches, virtual environments, outputs or secrets; a
file that looks like a secret, or that contains the token, stops the deploy.

The token comes from HF_TOKEN or the saved login (`hf auth login`) and is never printed. Without a
token, or with the Hub unreachable, the command prints one line and exits non-zero.
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from model import CONFIG_FILE, WEIGHTS_FILE
from modelrepo.artefacts import BASE_HISTORY, EVALUATION, HISTORY
from modelrepo.hub import MODEL_FILES
from space_config.card import DEFAULT_MODEL_ID, ROOT, render_card

DEFAULT_SPACE_ID = "fashion-mnist-explainer/fashion-mnist-explainer"
APP_FILE = "app.py"
REQUIREMENTS = "requirements.txt"
SPACE_WEIGHTS = "weights"              # where app.py looks for them, relative to the Space root
PHOTO_EXAMPLES = "examples/photos"     # the dashboard's real-photo examples (CC0, see examples/README.md)
WEIGHT_FILES = (CONFIG_FILE, WEIGHTS_FILE)
# Everything else a served model folder may hold (the detector, the Model view's history): the Hub's list.
OPTIONAL_WEIGHT_FILES = tuple(f for f in (*MODEL_FILES, HISTORY, BASE_HISTORY) if f not in WEIGHT_FILES)
# What a weights folder may contribute besides WEIGHT_FILES: the evaluation artefacts the app shows.
EVALUATION_SUFFIXES = (".json", ".png", ".npz")
# Names that must never be uploaded, whatever the file list says.
SECRET_NAME = re.compile(r"(^|/)(\.env(\..*)?|\.netrc|\.git-credentials|id_[a-z0-9]+|.*token.*|.*secret.*|"
                         r".*\.pem|.*\.key)$", re.IGNORECASE)
# A Hugging Face access token as the Hub issues them.
TOKEN_PATTERN = re.compile(rb"hf_[A-Za-z0-9]{30,}")


class DeployError(RuntimeError):
    """The deploy cannot go on; the message is one line for a person, without the token."""


@dataclass(frozen=True)
class SpaceFile:
    """One file of the Space: where it goes and where its bytes come from."""
    path_in_repo: str
    source: Path | None          # a local file, or None for generated content
    content: bytes | None = None

    def read(self) -> bytes:
        return self.content if self.content is not None else self.source.read_bytes()

    @property
    def size(self) -> int:
        return len(self.content) if self.content is not None else self.source.stat().st_size


# ---------------------------------------------------------------------------------------------
# Which local code does app.py need?
# ---------------------------------------------------------------------------------------------

def _imported_names(path: Path, root: Path) -> set[str]:
    """Dotted module names imported by one file, relative imports resolved against `root`."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, SyntaxError, UnicodeDecodeError) as e:
        raise DeployError(f"cannot read the imports of {path}: {type(e).__name__}: {e}") from None
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:    # from . import x / from ..a import b: resolve against this package
                base = package.split(".")[:len(package.split(".")) - node.level + 1] if package else []
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names |= {f"{module}.{a.name}" for a in node.names if module}   # `from pkg import submodule`
    return {n for n in names if n}


def _local_files(name: str, root: Path) -> list[Path]:
    """The file(s) of a local module or package named `name` under `root`; [] if not local."""
    parts = name.split(".")
    top = root / parts[0]
    if (top / "__init__.py").is_file() or (top.is_dir() and any(top.glob("*.py"))):
        # A local package goes up whole (all its .py files): its modules import each other by
        # registry or importlib in ways a parser can miss, and a Space with half a package breaks.
        return sorted(p for p in top.rglob("*.py") if "__pycache__" not in p.parts and "tests" not in p.parts)
    module = root / f"{parts[0]}.py"
    return [module] if module.is_file() else []


def local_imports(entry: str | Path = APP_FILE, root: Path = ROOT) -> list[Path]:
    """Every local Python file `entry` needs, found by following its imports; `entry` included.

    Args:
        entry: the app file (relative to `root` or absolute).
        root: the project root; a module is local when root/<name>.py or root/<name>/ exists.
    Returns:
        Sorted absolute paths.
    """
    root = Path(root).resolve()
    todo, seen = [(root / entry).resolve()], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imported_names(path, root):
            todo.extend(p.resolve() for p in _local_files(name, root))
    return sorted(seen)


# ---------------------------------------------------------------------------------------------
# The plan: every file of the Space
# ---------------------------------------------------------------------------------------------

def weight_files(weights: Path) -> list[SpaceFile]:
    """config.json + model.safetensors (required), training_history.json and evaluation/ artefacts."""
    files = []
    for name in WEIGHT_FILES:
        if not (weights / name).is_file():
            raise DeployError(f"{weights / name} is missing: train first (python train.py --out {weights})")
        files.append(SpaceFile(f"{SPACE_WEIGHTS}/{name}", weights / name))
    files += [SpaceFile(f"{SPACE_WEIGHTS}/{name}", weights / name)
              for name in OPTIONAL_WEIGHT_FILES if (weights / name).is_file()]
    evaluation = weights / EVALUATION
    if evaluation.is_dir():
        files += [SpaceFile(f"{SPACE_WEIGHTS}/{EVALUATION}/{p.relative_to(evaluation).as_posix()}", p)
                  for p in sorted(evaluation.rglob("*"))
                  if p.is_file() and p.suffix in EVALUATION_SUFFIXES and not p.name.startswith(".")]
    return files


def space_plan(root: Path = ROOT, weights: Path | None = None, model_id: str | None = None) -> list[SpaceFile]:
    """The Space's files, sorted by path, checked for secrets.

    Args:
        root: the project root (holds app.py and requirements.txt).
        weights: the local weights folder, uploaded as `weights/` (default: root/weights).
        model_id: a pushed model repo the card links to (default: DEFAULT_MODEL_ID); the deploy
            sets it as the Space variable MODEL_ID.
    Raises:
        DeployError: app.py, requirements.txt or the weights are missing, or a file looks secret.
    """
    root = Path(root).resolve()
    weights = Path(weights) if weights is not None else root / SPACE_WEIGHTS
    for name in (APP_FILE, REQUIREMENTS):
        if not (root / name).is_file():
            raise DeployError(f"{root / name} is missing: the Space needs it")
    files = [SpaceFile(p.relative_to(root).as_posix(), p) for p in local_imports(APP_FILE, root)]
    files.append(SpaceFile(REQUIREMENTS, root / REQUIREMENTS))
    files += weight_files(weights)
    files += [SpaceFile(p.relative_to(root).as_posix(), p) for p in sorted((root / PHOTO_EXAMPLES).glob("*.jpg"))]
    card = render_card(model_id or DEFAULT_MODEL_ID, weights, root / REQUIREMENTS)
    files.append(SpaceFile("README.md", None, card.encode()))
    files.sort(key=lambda f: f.path_in_repo)
    check_no_secrets(files)
    return files


def check_no_secrets(files: list[SpaceFile], token: str | None = None) -> None:
    """Refuse secret-looking names and any file containing a Hub token (or `token` itself).

    Raises:
        DeployError: naming the file, never the secret.
    """
    for f in files:
        if SECRET_NAME.search(f.path_in_repo):
            raise DeployError(f"refusing to upload {f.path_in_repo}: the name looks like a secret")
        data = f.read()
        if TOKEN_PATTERN.search(data) or (token and token.encode() in data):
            raise DeployError(f"refusing to upload {f.path_in_repo}: it contains a Hugging Face token")


# ---------------------------------------------------------------------------------------------
# Upload
# ---------------------------------------------------------------------------------------------

def deploy(files: list[SpaceFile], space_id: str, api, model_id: str | None = None,
           private: bool = False) -> str:
    """Create the Space if needed and make its files exactly `files`, in one commit.

    Files already in the Space but not in `files` are deleted (except .gitattributes), so an
    update leaves no stale module behind. Returns the commit URL.

    Args:
        api: an authenticated `huggingface_hub.HfApi`.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete
    api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    wanted = {f.path_in_repo for f in files}
    existing = api.list_repo_files(space_id, repo_type="space")
    operations = [CommitOperationDelete(path_in_repo=p) for p in existing
                  if p not in wanted and p != ".gitattributes"]
    operations += [CommitOperationAdd(path_in_repo=f.path_in_repo,
                                      path_or_fileobj=f.content if f.content is not None else str(f.source))
                   for f in files]
    info = api.create_commit(space_id, operations, repo_type="space",
                             commit_message="Deploy the Fashion-MNIST explainer (space_config.deploy)")
    if model_id:
        api.add_space_variable(space_id, "MODEL_ID", model_id,
                               description="Hub model repo the app loads its weights from")
    return str(getattr(info, "commit_url", info))


def _one_line(e: BaseException, token: str | None) -> str:
    reason = (str(e).strip().splitlines() or [""])[0]
    line = f"{type(e).__name__}: {reason}" if reason else type(e).__name__
    return line.replace(token, "***") if token else line


def print_plan(files: list[SpaceFile], space_id: str, model_id: str | None, token_found: bool,
               root: Path = ROOT) -> None:
    """The dry run's report: one line per file (path in the Space, size, local source), then the card."""
    root = Path(root).resolve()
    total = sum(f.size for f in files)
    print(f"Space {space_id}: {len(files)} files, {total / 1e6:.2f} MB (dry run: nothing uploaded)")
    for f in files:
        source = f.source.resolve() if f.source else None
        origin = (source.relative_to(root) if source and source.is_relative_to(root)
                  else source or "generated by space_config/card.py")
        print(f"  {f.path_in_repo:45s} {f.size:>10,d} B  <- {origin}")
    print(f"Space variable MODEL_ID: {model_id} (weights/ uploaded as the fallback)" if model_id
          else "Model: the uploaded weights/ (no MODEL_ID variable)")
    print(f"Token: {'found' if token_found else 'none (a real deploy needs HF_TOKEN or `hf auth login`)'}")
    card = next(f for f in files if f.path_in_repo == "README.md").read().decode()
    print("\n----- README.md (the Space card) -----")
    print(card)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--space-id", default=None,
                   help=f"the Space to create or update, <user or org>/<name> (required unless --dry-run, "
                        f"which shows {DEFAULT_SPACE_ID})")
    p.add_argument("--model-id", default=None,
                   help="a pushed model repo: the Space variable MODEL_ID, which app.py serves (falling back "
                        "to the uploaded weights/ when it cannot)")
    p.add_argument("--weights", type=Path, default=None,
                   help="local weights folder, uploaded as weights/ (default: <root>/weights)")
    p.add_argument("--root", type=Path, default=ROOT, help="project root holding app.py and requirements.txt")
    p.add_argument("--private", action="store_true", help="create the Space as private")
    p.add_argument("--dry-run", action="store_true", help="print the file list and the card; no network call")
    args = p.parse_args(argv)
    if not args.dry_run and not args.space_id:
        p.error("--space-id <user>/<name> is required (or use --dry-run)")
    return args


def main(argv=None, api=None) -> int:
    """The command line. `api` replaces HfApi (tests pass a recording stand-in)."""
    args = parse_args(argv)
    from huggingface_hub import get_token
    token = get_token()     # HF_TOKEN or the saved login; never printed
    try:
        files = space_plan(args.root, args.weights, args.model_id)
        check_no_secrets(files, token)
    except DeployError as e:
        print(f"deploy: {_one_line(e, token).removeprefix('DeployError: ')}", file=sys.stderr)
        return 2
    space_id = args.space_id or DEFAULT_SPACE_ID
    if args.dry_run:
        print_plan(files, space_id, args.model_id, bool(token), args.root)
        return 0
    if not token and api is None:
        print("deploy: no Hugging Face token: set HF_TOKEN or run `hf auth login`, then deploy again",
              file=sys.stderr)
        return 2
    if api is None:
        from huggingface_hub import HfApi
        api = HfApi(token=token)
    try:
        url = deploy(files, space_id, api, args.model_id, args.private)
    except Exception as e:   # network down, refused, 4xx/5xx: one line, no traceback, no token
        from huggingface_hub import constants
        print(f"deploy: could not deploy to Space {space_id} on {constants.ENDPOINT} ({_one_line(e, token)})",
              file=sys.stderr)
        return 1
    print(f"Deployed {len(files)} files to https://huggingface.co/spaces/{space_id} ({url})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
