"""Every DVC stage depends on all the repository code its command can execute.

A stage whose ``deps`` miss a file that shapes its outputs gives stale results without DVC
noticing: edit ``pipeline/shards/read.py`` (batch order) and ``dvc repro`` would happily keep
the old ``pretrain`` models. This test finds, for every stage of ``dvc.yaml``, the repository
source files its ``cmd`` can run, and fails naming those no dep covers (a dep covers a file
when it is that file or a directory above it); and, the other way, a code dep that covers
nothing the stage runs (a stage that re-runs for code it never runs).

How the files are found, once per stage script (not per matrix item), in a fresh interpreter
started the way ``python stages/<x>.py`` starts (script directory first on ``sys.path``):

1. import the stage script as a module (its ``main`` is guarded by ``__name__ == "__main__"``)
   and take every ``sys.modules`` entry whose file is in the repo;
2. run :class:`modulefinder.ModuleFinder` (searching the repo only) on the script and on every
   repo module from step 1: it scans bytecode, function bodies included, so it also catches
   lazy imports made inside functions, which a plain import never executes;
3. registries import their entries by name (``pipeline/registry.py``), which neither step sees:
   every registry that a module found so far imports (``from pipeline.registry import X``) is
   loaded (``X.names()`` imports every entry), and steps 1-3 repeat until nothing new is found.
   ``VALIDATION_ONLY`` modules do not count: params validation looks every method and protocol
   up to check its params section, but a stage runs an entry's code only through a registry it
   uses itself (pretrain: methods; evaluate and report: protocols; shard: none), and no entry's
   params reach a stage that does not use it (DVC tracks those sections per stage).

Empty files are left out: an empty module runs nothing (and DVC warns about an empty dependency).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DVC_YAML = ROOT / "dvc.yaml"

# Files a stage runs but deliberately does not depend on: {(stage, file): why}. A stage name
# of "*" means every stage. Every entry needs a reason in a comment; there should be hardly any.
ALLOWED_UNDECLARED: dict[tuple[str, str], str] = {}

# Modules that import registries only to validate params sections (see the module docstring).
VALIDATION_ONLY = ("pipeline/config.py",)

# Slow third-party imports made once, before forking, so each stage's probe starts warm.
# Only an optimisation: none of these import repository code (checked in the probe).
PRELOAD = (
    "numpy", "torch", "torchvision", "sklearn.linear_model", "sklearn.preprocessing", "PIL", "yaml",
    "pydantic", "rich", "webdataset",
)

_PROBE = r"""
import ast, importlib, importlib.util, json, modulefinder, os, sys, traceback

root = os.path.realpath(sys.argv[1])
out_dir, validation_only, preload, scripts = sys.argv[2], sys.argv[3].split(","), sys.argv[4].split(","), sys.argv[5:]
# Installed third-party code is not repository source, even when the venv lives in the repo.
env_dirs = {os.path.realpath(p) for p in (sys.prefix, sys.exec_prefix, sys.base_prefix)}

def repo_file(f):
    if not f:
        return None
    f = os.path.realpath(f)
    if not os.path.isfile(f) or not f.startswith(root + os.sep):
        return None
    if any(f == d or f.startswith(d + os.sep) for d in env_dirs):
        return None
    return os.path.relpath(f, root)

def repo_modules():
    return {name: rel for name, mod in list(sys.modules.items()) if (rel := repo_file(getattr(mod, "__file__", None)))}

def registries_used(files):
    # names imported from pipeline.registry by `files` (function bodies too), validation-only modules aside
    names = set()
    for rel in files:
        if rel in validation_only or not rel.endswith(".py"):
            continue
        with open(os.path.join(root, rel)) as f:
            tree = ast.parse(f.read())
        names |= {a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module == "pipeline.registry"
                  for a in node.names}
    return names

def closure(script, script_dir, stage_module):
    loaded = repo_modules()
    found = {os.path.relpath(script, root), *loaded.values()}
    # bytecode scan, function bodies included: lazy imports that never ran above
    # output folders at the root (dvclive/, data/ ...) would pass for namespace packages of the same name
    finder = modulefinder.ModuleFinder(path=[script_dir, root], excludes=["dvclive", "data", "models", "metrics", "reports"])
    finder.run_script(script)
    for name in loaded:
        if name != stage_module:
            try:
                finder.import_hook(name)
            except ImportError:
                pass
    found.update(rel for m in finder.modules.values() if (rel := repo_file(m.__file__)))
    return found

def probe(script):
    script = os.path.realpath(script)
    script_dir = os.path.dirname(script)
    # `python stages/x.py` puts the script's directory (not the cwd) first on sys.path
    sys.path.insert(0, script_dir)
    spec = importlib.util.spec_from_file_location("_dvc_deps_probe_stage", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)  # main() is guarded by `if __name__ == "__main__"`
    loaded_registries = set()
    while True:
        found = closure(script, script_dir, spec.name)
        new = registries_used(found) - loaded_registries
        if not new:
            return sorted(found)
        registry = importlib.import_module("pipeline.registry")
        for name in sorted(new):
            entry = getattr(registry, name)
            if isinstance(entry, registry.Registry):
                entry.names()  # imports every entry's module
        loaded_registries |= new

sys.path = [p for p in sys.path if p not in ("", os.getcwd())]
for name in preload:
    try:
        importlib.import_module(name)
    except ImportError:
        pass
leaked = repo_modules()
if leaked:
    sys.exit(f"preloading {preload} imported repository code {sorted(leaked.values())}: shrink PRELOAD")

pids = {}
for i, script in enumerate(scripts):
    pid = os.fork()
    if pid == 0:  # one forked child per stage script: a fresh interpreter state from here
        try:
            result = {"files": probe(script)}
        except BaseException:
            result = {"error": traceback.format_exc()[-4000:]}
        with open(os.path.join(out_dir, f"{i}.json"), "w") as f:
            json.dump(result, f)
        sys.stdout.flush()
        os._exit(0)
    pids[pid] = script
for pid in pids:
    os.waitpid(pid, 0)
"""


def _matrix_item() -> dict[str, str]:
    """The first value of each matrix axis: ``${item.<axis>}`` -> a real name."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text()) or {}
    return {"method": params["methods"][0], "protocol": params["protocols"][0], "baseline": params["baselines"][0]}


def _stages() -> dict[str, dict]:
    """Stage name -> {"script", "deps"} with the matrix variables substituted."""
    item = _matrix_item()

    def substitute(text: str) -> str:
        for axis, value in item.items():
            text = text.replace("${item.%s}" % axis, value)
        return text

    out = {}
    for name, stage in yaml.safe_load(DVC_YAML.read_text())["stages"].items():
        sub = substitute if "matrix" in stage else (lambda s: s)
        cmd = sub(" ".join(stage["cmd"]) if isinstance(stage["cmd"], list) else stage["cmd"])
        scripts = re.findall(r"\bpython3?\s+(?:-\S+\s+)*(\S+\.py)\b", cmd)
        assert len(scripts) == 1, f"stage {name!r}: expected one `python <script>.py` in cmd {cmd!r}; teach this test its command"
        assert "${item." not in cmd, f"stage {name!r}: unsubstituted matrix variable in {cmd!r}"
        deps = [os.path.normpath(sub(str(d))) for d in stage.get("deps", [])]
        out[name] = {"script": os.path.normpath(scripts[0]), "deps": deps}
    return out


STAGES = _stages()


@pytest.fixture(scope="module")
def executed_files(tmp_path_factory) -> dict[str, list[str]]:
    """Stage script -> repository files it can execute (one forked probe per script)."""
    scripts = sorted({s["script"] for s in STAGES.values()})
    out_dir = tmp_path_factory.mktemp("dvc_deps")
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(ROOT), str(out_dir), ",".join(VALIDATION_ONLY), ",".join(PRELOAD), *scripts],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"dependency probe failed:\n{proc.stderr[-3000:]}"
    files = {}
    for i, script in enumerate(scripts):
        result_file = out_dir / f"{i}.json"
        assert result_file.is_file(), f"probe of {script} wrote nothing:\n{proc.stderr[-3000:]}"
        result = json.loads(result_file.read_text())
        assert "files" in result, f"could not import {script} to find the code it runs:\n{result['error']}"
        files[script] = result["files"]
    return files


def _allowed(stage: str, path: str) -> bool:
    return any(s in (stage, "*") and (path == key or (key.endswith("/") and path.startswith(key)))
               for s, key in ALLOWED_UNDECLARED)


def _covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_cover_the_code_it_runs(stage, executed_files):
    script, deps = STAGES[stage]["script"], STAGES[stage]["deps"]
    ran = executed_files[script]
    assert script in ran
    missing = [
        f for f in ran
        if not _covered(f, deps) and not _allowed(stage, f) and (ROOT / f).stat().st_size  # an empty module runs nothing
    ]
    assert not missing, (
        f"dvc.yaml stage {stage!r} (runs {script}) executes repository code that none of its deps "
        f"cover, so editing it would leave the stage's results stale:\n"
        + "".join(f"  - {f}\n" for f in missing)
        + "add each file (or a directory above it) to the stage's deps, or to ALLOWED_UNDECLARED "
        "in tests/test_dvc_deps.py with the reason"
    )


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_code_dep_covers_code_the_stage_runs(stage, executed_files):
    """The other way: a code dep the stage never runs makes it re-run for nothing (editing a
    protocol would re-train every encoder)."""
    script, deps = STAGES[stage]["script"], STAGES[stage]["deps"]
    ran = executed_files[script]
    unused = [d for d in deps if d.split("/")[0] in ("pipeline", "stages") and not any(_covered(f, [d]) for f in ran)]
    assert not unused, (f"dvc.yaml stage {stage!r} (runs {script}) depends on code it never runs: {unused}; "
                        "remove them from its deps (tools/dvc_yaml.py: CODE)")


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_code_deps_exist(stage):
    """A misspelt code dep covers nothing and silently tracks nothing."""
    missing = [d for d in STAGES[stage]["deps"] if d.split("/")[0] in ("pipeline", "stages") and not (ROOT / d).exists()]
    assert not missing, f"dvc.yaml stage {stage!r} depends on code paths that do not exist: {missing}"


def test_allow_list_entries_name_real_stages():
    unknown = [k for k in ALLOWED_UNDECLARED if k[0] != "*" and k[0] not in STAGES]
    assert not unknown, f"ALLOWED_UNDECLARED names unknown stages: {unknown}"
