"""``cvloop init [DIR]``: a project folder for a team's own detector, or a check of one.

What a project holds (the design card's top level, for the team's data rather than the
demo's): ``params.yaml`` (the runbook's knobs, with the team's classes, imgsz and registered
model name), ``.env`` (where the services and the frame store are; from ``.env.example``),
``prefect.yaml`` (the deployments, to edit schedules), ``regions.example.yaml``,
``runbooks/``, a ``.gitignore``, and a git repository: the data repository the dataset
versions are committed to. ``.cvloop-project`` marks the folder, so ``cvloop`` run inside
it works for this project (``CVLOOP_PROJECT_DIR`` says the same from anywhere).

Nothing is overwritten without ``--force``; every file is reported as written, kept (it
was there) or, with ``--check``, as it stands.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cvloop.config.settings import PROJECT_MARKER, code_dir
from cvloop.core.errors import CvloopError

GITIGNORE = """# cvloop runtime (pids, logs, service data, generated secrets) and local settings
.cvloop/
.env
# DVC: the data lives in the DVC remote, the pointers (*.dvc) in git
/datasets/
/holdout/data/
.dvc/cache/
.dvc/tmp/
"""


REGIONS_EXAMPLE = """# A region's frames in their own bucket (runbooks/cameras.md). Rename to regions.yaml (or
# set CVLOOP_REGIONS_FILE) to use it; cameras join a region with
# `cvloop fleet register-camera CAM --group G --region eu-west`.
regions:
  eu-west:
    storage_uri: s3://your-frames-eu/prod
    # endpoint_url: https://s3.eu-west-1.amazonaws.com
"""


@dataclass
class Planned:
    path: str
    action: str  # write | keep | overwrite | ok | missing | invalid
    detail: str = ""


def _slug(name: str) -> str:
    s = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    return s or "detector"


def _classes_and_imgsz(checkpoint: str | None, classes: str | None, imgsz: int | None):
    if checkpoint:
        from cvloop.adapters.checkpoint import inspect_checkpoint, sha256_of

        info = inspect_checkpoint(checkpoint, sha256_of(checkpoint), imgsz)
        return info.classes, info.imgsz
    if not classes:
        raise CvloopError("cvloop init needs the class list",
                          fix="give --checkpoint best.pt (its names and imgsz are read, "
                          "safely), or --classes forklift,pallet,person --imgsz 640")  # fmt: skip
    names = [c.strip() for c in classes.split(",") if c.strip()]
    return names, imgsz or 640


def project_params(classes: list[str], imgsz: int, model_name: str) -> str:
    """The shipped params.yaml with the team's classes, imgsz and registered model name
    (edited line by line, so its comments stay)."""
    text = (code_dir() / "params.yaml").read_text()
    flow = "[" + ", ".join(classes) + "]"
    edits = [(r"(?m)^(  classes: )\[[^\]]*\]", rf"\g<1>{flow}"),
             (r"(?m)^(  imgsz: )\d+", rf"\g<1>{imgsz}"),
             (r"(?m)^(  model_name: )\S+", rf"\g<1>{model_name}"),
             (r"(?m)^(  experiment: )\S+", rf"\g<1>{model_name}")]  # fmt: skip
    for pattern, repl in edits:
        text, n = re.subn(pattern, repl, text, count=1)
        if n != 1:
            raise CvloopError(f"the shipped params.yaml has no line matching {pattern!r}",
                              fix="a cvloop checkout whose params.yaml is intact")  # fmt: skip
    return text


def init_project(
    target: Path,
    *,
    checkpoint: str | None = None,
    classes: str | None = None,
    imgsz: int | None = None,
    model_name: str | None = None,
    force: bool = False,
    check: bool = False,
) -> list[Planned]:
    """Scaffold (or, with ``check``, inspect) the project at ``target``."""
    target = target.expanduser().resolve()
    if check:
        return check_project(target)
    names, size = _classes_and_imgsz(checkpoint, classes, imgsz)
    name = model_name or _slug(target.name) + "-detector"
    src = code_dir()
    files: dict[str, str | Path] = {
        "params.yaml": project_params(names, size, name),
        ".env": src / ".env.example",
        "prefect.yaml": src / "prefect.yaml",
        "regions.example.yaml": REGIONS_EXAMPLE,
        ".gitignore": GITIGNORE,
        PROJECT_MARKER: f"cvloop project (made by `cvloop init` from {src})\n",
    }
    target.mkdir(parents=True, exist_ok=True)
    done = []
    for rel, content in files.items():
        path = target / rel
        if isinstance(content, Path) and not content.exists():
            continue
        if path.exists() and not force:
            done.append(Planned(rel, "keep", "exists (--force to overwrite)"))
            continue
        action = "overwrite" if path.exists() else "write"
        if isinstance(content, Path):
            shutil.copyfile(content, path)
        else:
            path.write_text(content)
        done.append(Planned(rel, action))
    books = target / "runbooks"
    for book in sorted((src / "runbooks").glob("*.md")):
        dest = books / book.name
        if dest.exists() and not force:
            done.append(Planned(f"runbooks/{book.name}", "keep", "exists"))
            continue
        books.mkdir(exist_ok=True)
        action = "overwrite" if dest.exists() else "write"
        shutil.copyfile(book, dest)
        done.append(Planned(f"runbooks/{book.name}", action))
    if not (target / ".git").exists():
        subprocess.run(["git", "init", "-q", "-b", "main"], cwd=target, check=True)
        done.append(Planned(".git", "write", "the data repository (dataset versions)"))
    else:
        done.append(Planned(".git", "keep", "a git repository already"))
    return done


def check_project(target: Path) -> list[Planned]:
    """What a project has and lacks: each file, params.yaml validated, the git repository."""
    from cvloop.config.params import load_params

    out = []
    for rel in ("params.yaml", ".env", "prefect.yaml", ".gitignore", PROJECT_MARKER):
        out.append(Planned(rel, "ok" if (target / rel).exists() else "missing"))
    if (target / "params.yaml").exists():
        try:
            p = load_params(target / "params.yaml")
            out[0].detail = (f"classes {list(p.classes)}, imgsz {p.train.imgsz}, model "
                             f"{p.registry.model_name}")  # fmt: skip
        except CvloopError as exc:
            out[0] = Planned("params.yaml", "invalid", str(exc).splitlines()[0])
    git = (target / ".git").exists()
    out.append(Planned(".git", "ok" if git else "missing", "" if git else "git init it"))
    return out


def describe(rows: list[Planned], target: Path) -> str:
    lines = [f"{r.action:<9} {r.path}" + (f"  ({r.detail})" if r.detail else "") for r in rows]
    bad = [r for r in rows if r.action in ("missing", "invalid")]
    if not bad and any(r.action in ("write", "overwrite", "keep") for r in rows):
        lines += ["", f"next: cd {target} && cvloop services up && cvloop adopt best.pt "
                  "--data annotations.json --holdout-frames 300   (runbooks/adopt.md)"]  # fmt: skip
    return "\n".join(lines)
