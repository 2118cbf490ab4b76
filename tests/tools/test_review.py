"""The PR review comment shows metric and param changes from committed files alone, and tells
signal from noise on the same test examples."""

import json
import os
import subprocess
import sys
from pathlib import Path

from tools.review import review_comment


def _git(cwd, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True, capture_output=True)


def test_review_comment_shows_metric_and_param_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    _git(tmp_path, "init", "-q", "-b", "main")
    subprocess.run(["dvc", "init", "-q"], check=True)
    (tmp_path / "params.yaml").write_text("pretrain:\n  lr: 0.6\n")
    (tmp_path / "m.json").write_text(json.dumps({"linear": {"top1": 0.80}}))
    (tmp_path / "dvc.yaml").write_text("metrics:\n  - m.json\n")
    (tmp_path / "report.md").write_text("# the report\n")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "base")
    _git(tmp_path, "checkout", "-qb", "change")
    (tmp_path / "params.yaml").write_text("pretrain:\n  lr: 0.3\n")
    (tmp_path / "m.json").write_text(json.dumps({"linear": {"top1": 0.85}}))
    _git(tmp_path, "commit", "-qam", "change")
    text = review_comment("main", tmp_path / "report.md")
    assert "| m | linear.top1 | 80.0% | 85.0% | +5.00 pt | untested | no per-example predictions |" in text
    assert "pretrain.lr" in text and "0.3" in text
    assert "# the report" in text


# --- twenty methods, size limit, stale metrics ----------------------------------------------

import re  # noqa: E402

import pytest  # noqa: E402

from tools import review  # noqa: E402

METHODS = [f"method{i:02d}" for i in range(20)]
STAGES = ["linear_eval", "few_shot", "diagnostics"]  # params.yaml protocol order: few_shot first

GEN = '''import json, sys, yaml
stage, method = sys.argv[1], sys.argv[2]
p = yaml.safe_load(open("params.yaml"))
s = p["train"]["lr"] + sum(map(ord, stage + method)) / 1e4
def blob(depth, k):
    if depth == 0:
        return round(s * (k + 1) % 1, 6)
    return {f"{name}_{k}": blob(depth - 1, j) for j, name in enumerate(["top1", "top5", "knn", "ci95", "val"])}
json.dump(blob(2, 0), open(f"metrics/{stage}/{method}.json", "w"))
'''


def _run_stages(root):
    """What `dvc repro` would do, without 38 subprocesses: run the stage code here, then lock it."""
    (root / "models").mkdir(exist_ok=True)
    (root / "models" / "encoder.bin").write_text((root / "params.yaml").read_text())
    for stage in STAGES:
        for m in METHODS:
            _gen(stage, m)
    exec((root / "report.py").read_text(), {})
    subprocess.run(["dvc", "commit", "-f", "-q"], check=True, capture_output=True)


def _gen(stage, method):
    import sys as _sys

    argv, _sys.argv = _sys.argv, ["gen.py", stage, method]
    try:
        exec(GEN, {})
    finally:
        _sys.argv = argv


PROTOCOLS = "protocols: [few_shot, linear_eval, diagnostics]\n"


def _stale_repo(tmp_path, monkeypatch):
    """main: 20 methods x 3 metric stages + a report stage, locked; `change`: new lr, re-run."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    _git(tmp_path, "init", "-q", "-b", "main")
    subprocess.run(["dvc", "init", "-q"], check=True)
    (tmp_path / "gen.py").write_text(GEN)
    (tmp_path / "params.yaml").write_text(f"methods: {json.dumps(METHODS)}\n{PROTOCOLS}train:\n  lr: 0.6\n")
    stages = {
        stage: {
            "matrix": {"method": "${methods}"},
            "cmd": f"python gen.py {stage} ${{item.method}}",
            "deps": ["gen.py", "models/encoder.bin"],
            "params": ["train"],
            "metrics": [{f"metrics/{stage}/${{item.method}}.json": {"cache": False}}],
        }
        for stage in STAGES
    }
    stages["pretrain"] = {  # a cached output: a clone has no cache for it
        "cmd": "python gen.py pretrain all",
        "deps": ["gen.py"],
        "params": ["train"],
        "outs": ["models/encoder.bin"],
    }
    stages["report"] = {
        "cmd": "python report.py",
        "deps": ["metrics", "report.py", "report_template.md"],
        "outs": [{"reports/report.md": {"cache": False}}, {"reports/figures": {"cache": False}}],
    }
    (tmp_path / "dvc.yaml").write_text(json.dumps({"stages": stages}))  # JSON is YAML
    figs = "".join(f"![curve {m}](figures/{m}.png)\n\n<img src=\"figures/{m}_map.png\">\n\n" for m in METHODS)
    rows = "".join(f"| {m} | " + " | ".join("0.8" for _ in range(20)) + " |\n" for m in METHODS)
    sections = "".join(f"## Section {i}\n\n{rows}\n[raw](figures/x.tsv) [abs](https://example.com/x)\n\n{figs}" for i in range(60))
    (tmp_path / "report_template.md").write_text("# Report\n\n" + sections)
    (tmp_path / "report.py").write_text(
        "import pathlib, shutil\n"
        "pathlib.Path('reports/figures').mkdir(parents=True, exist_ok=True)\n"
        f"for m in {METHODS!r}:\n    pathlib.Path(f'reports/figures/{{m}}.png').write_bytes(b'png')\n"
        "shutil.copy('report_template.md', 'reports/report.md')\n"
    )
    for stage in STAGES:
        (tmp_path / "metrics" / stage).mkdir(parents=True)
    _run_stages(tmp_path)
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "base")
    _git(tmp_path, "checkout", "-qb", "change")
    (tmp_path / "params.yaml").write_text(f"methods: {json.dumps(METHODS)}\n{PROTOCOLS}train:\n  lr: 0.3\n")
    _run_stages(tmp_path)
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "new lr, re-run")
    return tmp_path


@pytest.fixture(scope="module")
def twenty(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    try:
        yield _stale_repo(tmp_path_factory.mktemp("twenty"), mp)
    finally:
        mp.undo()


_RELATIVE_IMAGE = re.compile(r"!\[[^\]]*\]\((?!https?://)[^)]*\)|<img\b[^>]*src=[\"']?(?!https?://)", re.I)


def test_twenty_methods_stay_under_the_limit_and_say_what_was_cut(twenty, monkeypatch):
    monkeypatch.chdir(twenty)
    report = twenty / "reports" / "report.md"
    assert len(report.read_text()) > review.COMMENT_LIMIT  # the report alone would not fit
    r = review.build_review("main", report, artifact_url="https://example.com/artifact/1")
    text = r.text
    assert len(text) <= review.COMMENT_LIMIT < 65_536
    assert text.startswith(review.MARKER)
    assert not r.stale and review.STALE_FLAG not in text
    assert "**truncated** to stay under 60,000 characters" in text.split("### Metrics")[0]
    assert "truncated: the report omitted" in text or "report section(s) omitted" in text
    assert "truncated" in text and "full report in [the workflow artifact](https://example.com/artifact/1)" in text
    assert r.truncated
    assert not _RELATIVE_IMAGE.search(text), _RELATIVE_IMAGE.search(text).group(0)
    assert "](figures/" not in text  # relative plain links are gone too
    assert text.index("### Metrics") < text.index("### Params") < text.index("<details><summary>Report")
    # one table per protocol in params.yaml's protocol order, methods as rows (7 columns, not 20)
    at = [text.index(f"**`metrics/{stage}/`**") for stage in ("few_shot", "linear_eval", "diagnostics")]
    assert at == sorted(at)
    headers = [line for line in text.splitlines() if line.startswith("| method | metric |")]
    assert headers and all(h.count("|") == 8 for h in headers)
    assert "| method00 |" in text and "| method19 |" in text, text[:3000]
    assert "`train.lr` | 0.6 | 0.3 |" in text
    print(f"20-method comment: {len(text)} characters (report {len(report.read_text())})")


def test_small_limit_cuts_metric_rows_and_says_so(twenty, monkeypatch):
    monkeypatch.chdir(twenty)
    text = review.review_comment("main", twenty / "reports" / "report.md", limit=8000)
    assert len(text) <= 8000
    assert "the report omitted" in text
    assert re.search(r"truncated: \d+ (more )?row\(s\)", text)
    assert "**truncated** to stay under 8,000 characters" in text
    assert "### Params" in text  # params outlive collapsed metric rows


def test_report_links_are_rewritten_without_an_artifact_url():
    md = "![a](figures/a.png) ![b](https://x.org/b.png) [t](figures/t.tsv) <img src='figures/c.png'> [u](https://x.org)"
    out = review.rewrite_links(md, None)
    assert not _RELATIVE_IMAGE.search(out)
    assert "`a.png`" in out and "`c.png`" in out and "![b](https://x.org/b.png)" in out and "[u](https://x.org)" in out
    assert "](figures/" not in out


def test_stale_params_raise_the_flag_first_and_fail_the_check(twenty, monkeypatch, capsys):
    monkeypatch.chdir(twenty)
    params = (twenty / "params.yaml").read_text()
    (twenty / "params.yaml").write_text(params.replace("lr: 0.3", "lr: 0.1"))  # no dvc repro
    try:
        out = twenty / "out.md"
        assert review.main(["--base", "main", "--check", "--output", str(out)]) == 1
        assert review.STALE_FLAG in capsys.readouterr().err
        text = out.read_text()
        visible = [line for line in text.splitlines() if line.strip()]
        assert visible[0] == review.MARKER
        assert visible[1] == "> [!CAUTION]" and review.STALE_FLAG in visible[2]
        assert "params `train` changed" in text and "`linear_eval@method00`" in text
        assert "downstream of those: `report`" in text  # stale through the DAG
        st = review.stale_stages()
        assert "linear_eval@method19" in st.stages and "report" in st.stages
    finally:
        (twenty / "params.yaml").write_text(params)
    assert review.main(["--base", "main", "--check", "--output", str(twenty / "out.md")]) == 0
    assert review.STALE_FLAG not in (twenty / "out.md").read_text()


def test_committed_metric_that_disagrees_with_the_lock_is_stale(twenty, monkeypatch):
    monkeypatch.chdir(twenty)
    f = twenty / "metrics" / "few_shot" / "method03.json"
    orig = f.read_text()
    f.write_text(orig.replace("0.", "0.9", 1))  # hand-edited metric
    try:
        r = review.build_review("main", twenty / "reports" / "report.md")
        assert r.stale and "committed `metrics/few_shot/method03.json` differs from dvc.lock" in r.text
    finally:
        f.write_text(orig)


def test_clone_without_cache_is_not_stale(twenty, tmp_path, monkeypatch):
    """A fresh clone has no DVC cache: missing outputs must not raise the flag."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(twenty), str(clone)], check=True)
    assert not (clone / "models" / "encoder.bin").exists()
    monkeypatch.chdir(clone)
    r = review.build_review("main", clone / "reports" / "report.md")
    assert not r.stale, r.staleness
    assert review.STALE_FLAG not in r.text


# --- signal or noise, on the same test examples ----------------------------------------------


def _predictions(labels, pred, key="linear_top1"):
    return json.dumps({"labels": labels.tolist(), "predictions": {key: pred.tolist()}}, separators=(",", ":"))


def test_review_marks_noise_and_a_planted_two_point_gain(tmp_path, monkeypatch):
    """10k test examples, two methods re-run: `rerun` churns 310 predictions for +0.1 point (noise),
    `better` gains 2 points. Figures inline by raw URL, before and after."""
    import numpy as np

    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 10_000)
    base = np.where(rng.random(10_000) < 0.87, labels, (labels + 1) % 10)
    wrong, right = np.flatnonzero(base != labels), np.flatnonzero(base == labels)

    def flipped(fix, brk):
        out = base.copy()
        out[wrong[:fix]] = labels[wrong[:fix]]
        out[right[:brk]] = (labels[right[:brk]] + 1) % 10
        return out

    d = tmp_path / "metrics" / "linear_eval"
    d.mkdir(parents=True)
    (tmp_path / "reports" / "figures").mkdir(parents=True)

    def write(preds: dict, png: bytes):
        for name, pred in preds.items():
            (d / f"{name}.json").write_text(json.dumps({"linear_top1": float((pred == labels).mean())}))
            (d / f"{name}.predictions.json").write_text(_predictions(labels, pred))
        (tmp_path / "reports" / "figures" / "curves.png").write_bytes(png)
        (tmp_path / "reports" / "report.md").write_text("# Report\n\n![curves](figures/curves.png)\n")

    _git(tmp_path, "init", "-q", "-b", "main")
    subprocess.run(["dvc", "init", "-q"], check=True)
    (tmp_path / "params.yaml").write_text("protocols: [linear_eval]\n")
    (tmp_path / "dvc.yaml").write_text("metrics:\n  - metrics/linear_eval/rerun.json\n  - metrics/linear_eval/better.json\n")
    write({"rerun": base, "better": base}, b"png-a")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "base")
    _git(tmp_path, "checkout", "-qb", "change")
    write({"rerun": flipped(160, 150), "better": flipped(500, 300)}, b"png-b")
    _git(tmp_path, "commit", "-qam", "change")
    text = review.review_comment("main", tmp_path / "reports" / "report.md", raw_head="https://raw.example/o/r/HEAD",
                                 raw_base="https://raw.example/o/r/BASE")
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| rerun") or line.startswith("| better")}
    assert "| +0.10 pt | within noise | McNemar mid-p = 0.571 (160 fixed, 150 broken of 10,000) |" in rows["rerun"], text
    assert "+2.00 pt | **significant** | McNemar mid-p < 0.001 (500 fixed, 300 broken of 10,000)" in rows["better"]
    assert "1 **significant**, 1 within noise" in text
    assert '<img src="https://raw.example/o/r/BASE/reports/figures/curves.png"' in text
    assert '<img src="https://raw.example/o/r/HEAD/reports/figures/curves.png"' in text
    assert "![curves](https://raw.example/o/r/HEAD/reports/figures/curves.png)" in text  # the report's own image
