"""The basics a person picks the project up by: a licence, a fork-safe PR test workflow running
the README's test command with the pinned stack, a container that keeps outputs and history out."""

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def _workflow(name: str) -> dict:
    doc = yaml.safe_load((REPO / ".github" / "workflows" / name).read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as True
    return doc


def test_license_is_apache_2():
    assert (REPO / "LICENSE").read_text().split()[:3] == ["Apache", "License", "Version"]


def test_pr_test_workflow_runs_the_readme_command_fork_safe():
    wf = _workflow("tests.yml")
    assert "pull_request" in wf["on"] and "pull_request_target" not in wf["on"]
    assert wf["permissions"] == {"contents": "read"}
    text = (REPO / ".github" / "workflows" / "tests.yml").read_text()
    assert "${{ secrets." not in text
    runs = [s.get("run", "") for s in wf["jobs"]["test"]["steps"]]
    assert "bash scripts/run.sh test" in runs
    assert "bash scripts/run.sh test" in (REPO / "README.md").read_text()
    assert "-c constraints.txt" in (REPO / "scripts" / "run.sh").read_text()  # what that command installs with


def test_review_workflow_installs_with_constraints_and_runs_the_tool():
    text = (REPO / ".github" / "workflows" / "pr-review.yml").read_text()
    assert "pip install -c constraints.txt dvc numpy" in text and "python tools/review.py" in text
    assert "${{ secrets." not in text and "pull_request_target" not in text
    assert (REPO / "tools" / "review.py").is_file()


def _dvc_outputs() -> set[str]:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    outs = set()
    for stage in stages.values():
        for kind in ("outs", "metrics", "plots"):
            for out in stage.get(kind, []):
                outs.add(next(iter(out)) if isinstance(out, dict) else out)
    return outs


def test_dockerignore_covers_git_and_every_output():
    patterns = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert ".git" in patterns
    for out in sorted(_dvc_outputs()):
        parts = out.split("/")
        assert any("/".join(parts[:i]) in patterns for i in range(1, len(parts) + 1)), f"{out} is not in .dockerignore"


def test_dockerfile_user_owns_workdir_and_torch_cuda_is_an_argument():
    text = (REPO / "Dockerfile").read_text()
    assert text.index("useradd --create-home --uid 1000") < text.index("WORKDIR /app")  # the user exists first
    assert "chown ssl:ssl /app" in text and "COPY --chown=ssl:ssl . ." in text
    assert re.search(r"^ARG TORCH_CUDA=cu13$", text, re.M) and "download.pytorch.org/whl/$TORCH_CUDA" in text
    run_sh = (REPO / "tests" / "container" / "run.sh").read_text()
    assert '--volume "$WORK/in-container:/app"' in run_sh  # with a volume
    assert re.search(r'buildah run --isolation chroot --user 1000:1000 "\$CTR2"', run_sh)  # and without one
