"""The pull-request review comment: what a change did to every metric, whether it is signal or
noise, what it changed in the params, the figures and the reports.

    python tools/review.py [--base main] [--report reports/report.md --report reports/text/report.md]
        [--raw-head URL --raw-base URL] [--artifact-url URL] [--output review.md] [--check] [--limit 60000]

Reads only committed files (metric JSONs, per-example predictions, params.yaml, dvc.yaml,
dvc.lock, the reports and figures) through `dvc metrics diff --json`, `dvc params diff --json`,
`dvc status --json`, `dvc dag --dot` and `git show BASE:path`, so it needs no GPU, no DVC
remote, no cache and no pipeline run (NumPy and DVC only). The GitHub workflow posts exactly
this text; run it locally to see what reviewers will see.

The comment, in order of importance:

1. a hidden marker (`MARKER`) by which the posting workflow finds and updates its own comment;
2. a red flag when the committed metrics are stale (a stage's params, code or command changed
   since `dvc.lock` was written, or a committed output disagrees with `dvc.lock`);
3. the changed metrics: one table per protocol, in `params.yaml` protocol order, methods as
   rows, accuracies in percent as the report prints them, and every change marked
   "significant" or "within noise" at level `ALPHA` (tools/significance.py): McNemar's test on
   the same test examples where both commits wrote per-example predictions, a bootstrap
   interval for other per-example values, a normal test from recorded 95% CIs; else "untested";
4. the params diff;
5. the figures inline by raw URL at the head commit (before and after where both exist;
   `--raw-head`/`--raw-base`), and the reports, collapsed, their images by raw URL too.

It always stays under `COMMENT_LIMIT` characters (GitHub refuses comments over 65,536): when it
must cut, it cuts the reports first, then figures, rows within noise, other rows, params, and
says what it cut.

Exit status: 0; with `--check`, 1 when the metrics are stale (or staleness could not be checked).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field, replace
from typing import ClassVar
from pathlib import Path, PurePosixPath

if __package__ in (None, ""):  # run as a script: python tools/review.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from tools.significance import ALPHA, Verdict, independent_means, paired_bootstrap, paired_classification  # noqa: E402

MARKER = "<!-- ssl-pipeline-review -->"
COMMENT_LIMIT = 60_000  # GitHub's limit is 65,536 characters; keep a margin
STALE_FLAG = "Metrics below are stale"
MAX_CELL = 120  # characters of one table cell (params can be long lists)
_PERCENT = re.compile(r"top\d|acc|shot$|(^|\.)(linear|finetune)_\d")  # accuracies: shown in percent
REPORTS = ("reports/report.md", "reports/text/report.md")


# --- dvc -------------------------------------------------------------------------------------


@dataclass
class DvcResult:
    data: object = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)


def _dvc_json(*args: str) -> DvcResult:
    try:
        res = subprocess.run(["dvc", *args, "--json"], capture_output=True, text=True)
    except OSError as e:  # dvc not installed
        return DvcResult(error=f"`dvc {' '.join(args)}` could not run: {e}")
    warnings = [ln.strip() for ln in res.stderr.splitlines() if "WARNING" in ln or "failed to load" in ln]
    if res.returncode:
        return DvcResult(error=f"`dvc {' '.join(args)}` failed: {res.stderr.strip()[:500]}")
    try:
        return DvcResult(data=json.loads(res.stdout or "{}"), warnings=warnings[:5])
    except json.JSONDecodeError:
        return DvcResult(error=f"`dvc {' '.join(args)}` printed no JSON: {res.stdout.strip()[:300]}")


def _dvc_text(*args: str) -> DvcResult:
    try:
        res = subprocess.run(["dvc", *args], capture_output=True, text=True)
    except OSError as e:
        return DvcResult(error=f"`dvc {' '.join(args)}` could not run: {e}")
    if res.returncode:
        return DvcResult(error=f"`dvc {' '.join(args)}` failed: {res.stderr.strip()[:500]}")
    return DvcResult(data=res.stdout)


# --- stale stages ----------------------------------------------------------------------------


@dataclass
class Staleness:
    stages: dict[str, list[str]]  # stage -> reasons
    error: str | None = None

    @property
    def stale(self) -> bool:
        return bool(self.stages) or self.error is not None


def _lock_outs(lock: Path) -> set[str]:
    """Output paths recorded in dvc.lock: a missing one is only a missing cache, not a change."""
    try:
        import yaml

        data = yaml.safe_load(lock.read_text()) or {}
    except Exception:  # no dvc.lock, or no YAML parser: every missing dep then counts
        return set()
    outs = set()
    for stage in (data.get("stages") or {}).values():
        for out in (stage or {}).get("outs") or []:
            if isinstance(out, dict) and "path" in out:
                outs.add(str(PurePosixPath(out["path"])))
    return outs


def _is_output(path: str, outs: set[str]) -> bool:
    p = PurePosixPath(path)
    return any(p == PurePosixPath(o) or p in PurePosixPath(o).parents or PurePosixPath(o) in p.parents for o in outs)


def _dag_edges(dot: str) -> list[tuple[str, str]]:
    return re.findall(r'"([^"]+)"\s*->\s*"([^"]+)"', dot)


def _stage_reasons(entries: list, lock_outs: set[str]) -> list[str]:
    reasons: list[str] = []
    for entry in entries:
        if isinstance(entry, str):  # "changed command", "always changed", ...
            reasons.append(entry)
            continue
        for kind, changes in entry.items():
            if not isinstance(changes, dict):
                reasons.append(f"{kind}")
                continue
            for path, state in changes.items():
                if isinstance(state, dict):  # params file: {param: "modified" | "new" | "deleted"}
                    keys = ", ".join(f"`{k}`" for k in sorted(state))
                    reasons.append(f"params {keys} changed")
                elif state == "new" and kind == "changed deps":
                    reasons.append(f"not in dvc.lock for `{path}` (never run, or its deps changed)")
                elif kind == "changed deps" and state == "deleted" and _is_output(path, lock_outs):
                    continue  # an upstream output absent for want of the cache: upstream decides
                elif kind == "changed deps":
                    reasons.append(f"`{path}` {'changed' if state == 'modified' else state} since dvc.lock")
                elif kind == "changed outs" and state == "modified":
                    reasons.append(f"committed `{path}` differs from dvc.lock")
                # outs "deleted" / "not in cache": normal in a clone without the DVC cache
    return reasons


def stale_stages(lock: Path = Path("dvc.lock")) -> Staleness:
    """Stages whose committed results do not match their params, code or command.

    `dvc status` compares dvc.lock's recorded params and dep hashes with the working tree; it
    needs no cache for that (params are compared with params.yaml exactly, code files by md5).
    A clone without the cache misses data outputs: those are reported as "deleted" or "not in
    cache" and ignored here; staleness instead flows down `dvc dag` from stale upstream stages.
    """
    status = _dvc_json("status")
    if status.error:
        return Staleness({}, error=status.error)
    lock_outs = _lock_outs(lock)
    stages: dict[str, list[str]] = {}
    for name, entries in (status.data or {}).items():
        reasons = _stage_reasons(entries if isinstance(entries, list) else [entries], lock_outs)
        if reasons:
            stages[name] = list(dict.fromkeys(reasons))
    if stages:
        dag = _dvc_text("dag", "--dot")
        edges = _dag_edges(dag.data or "") if not dag.error else []
        changed = True
        while changed:
            changed = False
            for up, down in edges:
                if up in stages and down not in stages:
                    stages[down] = [f"upstream `{up}` is stale"]
                    changed = True
    return Staleness(stages)


def _stale_block(st: Staleness, max_groups: int = 20, max_names: int = 12) -> list[str]:
    if not st.stale:
        return []
    lines = [
        "> [!CAUTION]",
        f"> :red_circle: **{STALE_FLAG}**: "
        + (f"{len(st.stages)} stage(s) changed since `dvc.lock` was written. " if st.stages else "")
        + "Run `dvc repro` and commit `dvc.lock` and the metrics.",
    ]
    if st.error:
        lines.append(f"> Could not check `dvc.lock` against the code and params: {_one_line(st.error)}")
    groups: dict[tuple[str, ...], list[str]] = {}
    for name, reasons in st.stages.items():
        groups.setdefault(tuple(reasons), []).append(name)
    direct = sorted(((r, n) for r, n in groups.items() if not r[0].startswith("upstream")), key=lambda kv: -len(kv[1]))
    downstream = [n for r, names in groups.items() if r[0].startswith("upstream") for n in names]
    for reasons, names in direct[:max_groups]:
        more = f"; and {len(reasons) - 6} more" if len(reasons) > 6 else ""
        lines.append(f"> - {_names(names, max_names)}: {'; '.join(reasons[:6])}{more}")
    if len(direct) > max_groups:
        lines.append(f"> - ... and {sum(len(n) for _, n in direct[max_groups:])} more stage(s)")
    if downstream:
        lines.append(f"> - downstream of those: {_names(downstream, max_names)}")
    return lines + [""]


def _names(names: list[str], cap: int) -> str:
    shown = ", ".join(f"`{n}`" for n in names[:cap])
    return shown + (f" and {len(names) - cap} more" if len(names) > cap else "")


# --- reading both commits ----------------------------------------------------------------------


def _git_bytes(base: str, path: str) -> bytes | None:
    """``path`` as committed at ``base`` (None where it is absent or git fails)."""
    try:
        res = subprocess.run(["git", "show", f"{base}:{path}"], capture_output=True)
    except OSError:
        return None
    return res.stdout if res.returncode == 0 else None


def _json_or_none(data: bytes | str | None) -> dict | None:
    try:
        doc = json.loads(data) if data else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def _both(base: str, path: str) -> tuple[dict | None, dict | None]:
    """(base, head) JSON documents of ``path``; head is the working tree (the checked-out PR)."""
    head = Path(path)
    return _json_or_none(_git_bytes(base, path)), _json_or_none(head.read_bytes() if head.is_file() else None)


def predictions_path(metrics_path: str) -> str:
    """``metrics/knn/simclr.json`` -> ``metrics/knn/simclr.predictions.json`` (pipeline/eval/predictions.py)."""
    return metrics_path.removesuffix(".json") + ".predictions.json"


def protocol_order(params: Path = Path("params.yaml")) -> list[str]:
    """``protocols:`` of params.yaml, in order (no YAML parser needed: it is a flow list)."""
    m = re.search(r"^protocols:\s*\[([^\]]*)\]", params.read_text() if params.is_file() else "", re.M)
    return [s.strip().strip("'\"") for s in m.group(1).split(",") if s.strip()] if m else []


# --- significance ------------------------------------------------------------------------------


def judge(key: str, old: float, new: float, base_metrics: dict | None, head_metrics: dict | None,
          base_pred: dict | None, head_pred: dict | None) -> Verdict:
    """The strongest test the committed files allow for metric ``key`` going ``old`` -> ``new``."""
    bp, hp = base_pred or {}, head_pred or {}
    b_cls, h_cls = (bp.get("predictions") or {}).get(key), (hp.get("predictions") or {}).get(key)
    if b_cls is not None and h_cls is not None:
        labels_b, labels_h = np.asarray(bp.get("labels", [])), np.asarray(hp.get("labels", []))
        if labels_b.shape != labels_h.shape or not np.array_equal(labels_b, labels_h):
            return Verdict(None, "test examples differ between the commits")
        return paired_classification(labels_h, np.asarray(b_cls), np.asarray(h_cls))
    b_val, h_val = (bp.get("values") or {}).get(key), (hp.get("values") or {}).get(key)
    if b_val is not None and h_val is not None and len(b_val) == len(h_val) > 1:
        return paired_bootstrap(np.asarray(b_val), np.asarray(h_val))
    ci = f"{key}_ci95"
    if base_metrics and head_metrics and ci in base_metrics and ci in head_metrics:
        return independent_means(old, base_metrics[ci], new, head_metrics[ci])
    return Verdict(None, "no per-example predictions")


# --- tables ----------------------------------------------------------------------------------


def _one_line(s: str) -> str:
    return " ".join(str(s).split())


def _cell(s: str) -> str:
    s = _one_line(s).replace("|", "\\|")
    return s if len(s) <= MAX_CELL else s[: MAX_CELL - 3] + "..."


def _fmt(v) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def _is_percent(key: str, *values) -> bool:
    nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return bool(_PERCENT.search(key)) and bool(nums) and all(0 <= v <= 1 for v in nums)


def _value(v, percent: bool) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f}%" if percent else _fmt(v)


def _delta(old, new, percent: bool) -> str:
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (old, new)):
        return "new" if old is None else "removed" if new is None else "changed"
    d = new - old
    return f"{100 * d:+.2f} pt" if percent else f"{d:+.3g}"


@dataclass
class Row:
    method: str
    metric: str
    old: object
    new: object
    verdict: Verdict

    @property
    def rank(self) -> int:
        """What the size budget cuts last: significant (0), untested (1), within noise (2)."""
        return {True: 0, None: 1, False: 2}[self.verdict.significant]

    def render(self) -> str:
        pc = _is_percent(self.metric, self.old, self.new)
        return (f"| {_cell(self.method)} | {_cell(self.metric)} | {_value(self.old, pc)} | {_value(self.new, pc)} | "
                f"{_delta(self.old, self.new, pc)} | {self.verdict.label} | {_cell(self.verdict.test)} |")


@dataclass
class ProtocolTable:
    folder: str  # metrics/<protocol>, text/metrics/<protocol>, metrics/pretrain ...
    rows: list[Row]

    HEADER: ClassVar[tuple[str, str]] = (f"| method | metric | base | head | change | verdict (α = {ALPHA}) | test |",
                               "|---|---|---:|---:|---:|---|---|")


def protocol_tables(diff: dict, base: str, order: list[str]) -> list[ProtocolTable]:
    """`dvc metrics diff --json` as one table per metrics folder (protocol), in protocol order,
    methods as rows, each change judged by ``judge``. ``*_ci95`` keys are the spread of their
    metric, not rows of their own."""
    folders: dict[str, list[Row]] = {}
    for path, metrics in sorted(diff.items()):
        if not metrics:
            continue
        p = PurePosixPath(path)
        method = p.name.removesuffix(".json")
        base_m, head_m = _both(base, path)
        base_p, head_p = _both(base, predictions_path(path))
        rows = folders.setdefault(str(p.parent), [])
        for key, change in metrics.items():
            if key.endswith("_ci95"):
                continue
            c = change if isinstance(change, dict) else {"new": change}
            old, new = c.get("old"), c.get("new")
            numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (old, new))
            verdict = judge(key, old, new, base_m, head_m, base_p, head_p) if numeric else Verdict(None, "not a change of a number")
            rows.append(Row(method, key, old, new, verdict))
    rank = {name: i for i, name in enumerate(order)}

    def place(folder: str) -> tuple:
        name = PurePosixPath(folder).name
        return (PurePosixPath(folder).parent.as_posix(), rank.get(name, len(rank)), name)

    return [ProtocolTable(f, rows) for f, rows in sorted(folders.items(), key=lambda kv: place(kv[0])) if rows]


def params_rows(diff: dict) -> list[str]:
    rows = []
    for path, params in sorted(diff.items()):
        for key, c in params.items():
            c = c if isinstance(c, dict) else {"new": c}
            rows.append(f"| `{_cell(path)}` | `{_cell(key)}` | {_cell(_fmt(c.get('old')))} | {_cell(_fmt(c.get('new')))} |")
    return rows


# --- reports and figures -----------------------------------------------------------------------

_IMG_MD = re.compile(r"!\[([^\]]*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_LINK_MD = re.compile(r"(?<!!)\[([^\]]*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_IMG_HTML = re.compile(r"<img\b[^>]*>", re.I)
_ABSOLUTE = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|#|//)", re.I)


def _figure_ref(alt: str, target: str, artifact_url: str | None) -> str:
    name = PurePosixPath(target).name
    label = f"figure: {alt or name} (`{name}`)"
    return f"[{label}, in the workflow artifact]({artifact_url})" if artifact_url else f"*{label}, not shown in comments*"


def _raw(raw_head: str, folder: PurePosixPath, target: str) -> str:
    """A relative image target of a file in ``folder`` as a raw URL at the head commit."""
    parts: list[str] = []
    for part in (folder / target).parts:
        if part == "..":
            parts = parts[:-1]
        elif part != ".":
            parts.append(part)
    return f"{raw_head.rstrip('/')}/{'/'.join(parts)}"


def rewrite_links(md: str, artifact_url: str | None, raw_head: str | None = None, folder: str = "reports") -> str:
    """No relative links or images: they point nowhere from a comment. Images become raw URLs
    at the head commit (``raw_head``) where given, else a reference to the artifact."""
    where = PurePosixPath(folder)

    def img(m: re.Match) -> str:
        alt, target = m.group(1), m.group(2)
        if _ABSOLUTE.match(target):
            return m.group(0)
        return f"![{alt}]({_raw(raw_head, where, target)})" if raw_head else _figure_ref(alt, target, artifact_url)

    def link(m: re.Match) -> str:
        text, target = m.group(1), m.group(2)
        return m.group(0) if _ABSOLUTE.match(target) else f"{text} (`{target}`)"

    def html(m: re.Match) -> str:
        src = re.search(r"""src\s*=\s*["']?([^"'\s>]+)""", m.group(0), re.I)
        if src and _ABSOLUTE.match(src.group(1)) and not src.group(1).startswith("#"):
            return m.group(0)
        target = src.group(1) if src else "image"
        return f'<img src="{_raw(raw_head, where, target)}">' if raw_head and src else _figure_ref("", target, artifact_url)

    return _IMG_HTML.sub(html, _LINK_MD.sub(link, _IMG_MD.sub(img, md)))


def _report_sections(text: str) -> list[str]:
    """The report split before each `## ` heading: the unit the comment keeps or drops."""
    parts, cur = [], []
    for line in text.splitlines():
        if line.startswith("## ") and cur:
            parts.append("\n".join(cur))
            cur = []
        cur.append(line)
    if cur:
        parts.append("\n".join(cur))
    return parts


def _git_blob(rev: str, path: str) -> str | None:
    res = subprocess.run(["git", "rev-parse", "-q", "--verify", f"{rev}:{path}"], capture_output=True, text=True)
    return res.stdout.strip() if res.returncode == 0 else None


def _work_blob(path: Path) -> str | None:
    res = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True)
    return res.stdout.strip() if res.returncode == 0 else None


@dataclass
class Figure:
    path: str  # repository-relative
    state: str  # "changed", "new", "same"


def figures_of(folders: list[Path], base: str) -> list[Figure]:
    """The PNGs of ``folders`` at the head (working tree), changed and new ones first."""
    figs = []
    for folder in folders:
        for f in sorted(folder.glob("*.png")) if folder.is_dir() else []:
            rel = _shown(f)
            old = _git_blob(base, rel)
            figs.append(Figure(rel, "new" if old is None else "same" if old == _work_blob(f) else "changed"))
    return sorted(figs, key=lambda g: ({"changed": 0, "new": 1, "same": 2}[g.state], g.path))


def figure_lines(figs: list[Figure], raw_head: str | None, raw_base: str | None, artifact_url: str | None) -> list[str]:
    """Changed and new figures inline (base | head side by side where both exist), the rest linked."""
    if not figs:
        return []
    if not raw_head:
        where = f"[download them from the workflow artifact]({artifact_url})" if artifact_url else "not attached to this comment"
        names = ", ".join(f"`{_cell(PurePosixPath(g.path).name)}`" for g in figs[:100])
        return [f"<details><summary>Figures ({len(figs)})</summary>", "", f"Pass --raw-head to show them inline: {where}.",
                "", names + (f" and {len(figs) - 100} more" if len(figs) > 100 else ""), "", "</details>", ""]
    shown = [g for g in figs if g.state != "same"]
    out = [f"### Figures ({len(shown)} changed or new of {len(figs)})", ""]
    if shown:
        out += ["| figure | base | head |", "|---|---|---|"]
        for g in shown:
            before = f'<img src="{raw_base.rstrip("/")}/{g.path}" width="360">' if raw_base and g.state == "changed" else "(new)"
            out.append(f"| `{_cell(g.path)}` | {before} | <img src=\"{raw_head.rstrip('/')}/{g.path}\" width=\"360\"> |")
        out.append("")
    same = [g for g in figs if g.state == "same"]
    if same:
        links = ", ".join(f"[{PurePosixPath(g.path).name}]({raw_head.rstrip('/')}/{g.path})" for g in same)
        out += [f"<details><summary>{len(same)} unchanged figure(s)</summary>", "", links, "", "</details>", ""]
    return out


# --- the comment -----------------------------------------------------------------------------


@dataclass
class Review:
    text: str
    staleness: Staleness
    truncated: list[str]

    @property
    def stale(self) -> bool:
        return self.staleness.stale


@dataclass
class _Budget:
    report_sections: int
    figures: int  # 0 or 1: the figures block shown or not
    params: int
    noise_rows: int  # rows "within noise" kept (the cheapest to lose: they say nothing changed)
    other_rows: int  # significant and untested rows kept


def build_review(
    base: str,
    reports: Path | list[Path] = None,
    *,
    artifact_url: str | None = None,
    raw_head: str | None = None,
    raw_base: str | None = None,
    figures: list[Path] | Path | None = None,
    limit: int = COMMENT_LIMIT,
    lock: Path = Path("dvc.lock"),
    params: Path = Path("params.yaml"),
) -> Review:
    reports = [Path(r) for r in REPORTS] if reports is None else [reports] if isinstance(reports, Path) else list(reports)
    reports = [r for i, r in enumerate(reports) if r.is_file() or i == 0]  # the first is reported missing; others optional
    staleness = stale_stages(lock)
    mdiff = _dvc_json("metrics", "diff", base)
    pdiff = _dvc_json("params", "diff", base)
    tables = protocol_tables(mdiff.data, base, protocol_order(params)) if isinstance(mdiff.data, dict) else []
    prows = params_rows(pdiff.data) if isinstance(pdiff.data, dict) else []
    fig_dirs = [figures] if isinstance(figures, Path) else figures if figures is not None else [r.parent / "figures" for r in reports]
    figs = figures_of(fig_dirs, base)
    fig_block = figure_lines(figs, raw_head, raw_base, artifact_url)
    sections: list[str] = []
    for r in reports:
        if r.is_file():
            text = rewrite_links(r.read_text(), artifact_url, raw_head, _shown(r.parent))
            parts = _report_sections(text)
            sections += [f"#### `{_shown(r)}`\n\n{parts[0]}"] + parts[1:] if parts else []
    rows = [row for t in tables for row in t.rows]
    lines = {id(row): row.render() for row in rows}  # rendered once: the size search renders the comment often
    n_noise = sum(r.rank == 2 for r in rows)
    counts = {k: sum(r.verdict.label == k for r in rows) for k in ("**significant**", "within noise", "untested")}

    def render(b: _Budget) -> tuple[str, list[str]]:
        cut: list[str] = []
        body: list[str] = [MARKER]
        body += _stale_block(staleness)
        body += [f"## SSL pipeline: changes against `{base}`", ""]
        notes_at = len(body)

        body += ["### Metrics", ""]
        if mdiff.error:
            body += [f"> :warning: {_one_line(mdiff.error)}", ""]
        body += [f"> :warning: {_one_line(w)}" for w in mdiff.warnings] + ([""] if mdiff.warnings else [])
        if not tables and not mdiff.error:
            body += ["No metric changed." + (" (The metrics are stale: see above.)" if staleness.stale else ""), ""]
        if rows:
            body += [f"{len(rows)} changed metric(s): {counts['**significant**']} **significant**, {counts['within noise']} "
                     f"within noise, {counts['untested']} untested, at α = {ALPHA} per change (no correction for the "
                     "number of changes: expect about 1 in 20 unchanged ones flagged). Accuracies in percent, changes "
                     "in points. McNemar's mid-p test pairs both commits' predictions on the same test examples; "
                     "few-shot means use their 95% CIs.", ""]
        noise_left, other_left, dropped = b.noise_rows, b.other_rows, 0
        for t in tables:
            keep = []
            for row in t.rows:
                if row.rank == 2 and noise_left > 0:
                    noise_left -= 1
                    keep.append(row)
                elif row.rank != 2 and other_left > 0:
                    other_left -= 1
                    keep.append(row)
            dropped += len(t.rows) - len(keep)
            n = len(t.rows)
            sig = sum(r.rank == 0 for r in t.rows)
            body += [f"**`{t.folder}/`**: {n} change{'s' * (n != 1)}, {sig} significant", ""]
            if keep:
                body += [*ProtocolTable.HEADER, *(lines[id(r)] for r in keep)]
            if len(keep) < n:
                body += ["", f"*truncated: {n - len(keep)} row(s) of `{t.folder}/` omitted*"]
            body += [""]
        if dropped:
            cut.append(f"{dropped} metric row(s)")

        body += ["### Params", ""]
        if pdiff.error:
            body += [f"> :warning: {_one_line(pdiff.error)}", ""]
        if prows:
            body += ["| file | param | old | new |", "|---|---|---|---|", *prows[: b.params]]
            if b.params < len(prows):
                body += ["", f"*truncated: {len(prows) - b.params} param row(s) omitted*"]
                cut.append(f"{len(prows) - b.params} param row(s)")
            body += [""]
        elif not pdiff.error:
            body += ["No param changed.", ""]

        if fig_block and b.figures:
            body += fig_block
        elif fig_block:
            cut.append("the figures")

        names = ", ".join(_shown(r) for r in reports)
        body += [f"<details><summary>Report ({names})</summary>", ""]
        if not reports[0].is_file():
            body += [f"{reports[0]} not found: run `dvc repro` and commit it.", ""]
        body += sections[: b.report_sections]
        omitted = len(sections) - b.report_sections
        if omitted:
            what = "the report omitted" if b.report_sections == 0 else f"{omitted} of {len(sections)} report section(s) omitted"
            where = f"[the workflow artifact]({artifact_url})" if artifact_url else "the workflow artifact"
            body += ["", f"*truncated: {what}; full report in {where}*"]
            cut.append(what.replace("the report omitted", "the report"))
        body += ["", "</details>", ""]

        if cut:
            body[notes_at:notes_at] = [f"> :scissors: **truncated** to stay under {limit:,} characters: {', '.join(cut)} omitted (see the notes below).", ""]
        return "\n".join(body) + "\n", cut

    full = _Budget(len(sections), 1, len(prows), n_noise, len(rows) - n_noise)
    text, cut = render(full)
    if len(text) > limit:
        b = full
        # least important first: report sections, figures, rows within noise, other rows, params
        for fieldname in ("report_sections", "figures", "noise_rows", "other_rows", "params"):
            lo, hi = 0, getattr(b, fieldname)
            if len(render(replace(b, **{fieldname: lo}))[0]) > limit:
                b = replace(b, **{fieldname: lo})
                continue
            while lo < hi:  # largest value that fits
                mid = (lo + hi + 1) // 2
                if len(render(replace(b, **{fieldname: mid}))[0]) <= limit:
                    lo = mid
                else:
                    hi = mid - 1
            b = replace(b, **{fieldname: lo})
            break
        text, cut = render(b)
    if len(text) > limit:  # only the stale flag and headings are left: cut hard, and say so
        note = f"\n\n*truncated: the comment was cut at {limit:,} characters; full comment in the workflow artifact*\n"
        text = text[: limit - len(note)] + note
        cut.append("the end of the comment")
    return Review(text, staleness, cut)


def _shown(path: Path) -> str:
    """``path`` relative to the working directory where it lies inside it."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def review_comment(base: str, reports: Path | list[Path] | None = None, **kwargs) -> str:
    return build_review(base, reports, **kwargs).text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="main", help="git revision to compare against")
    ap.add_argument("--report", action="append", default=None,
                    help=f"a report to include (repeatable; default: {', '.join(REPORTS)} where present)")
    ap.add_argument("--figures", action="append", default=None, help="figure folder(s) (default: figures/ beside each report)")
    ap.add_argument("--raw-head", default=None,
                    help="raw URL of the head commit, e.g. https://raw.githubusercontent.com/OWNER/REPO/SHA: figures inline")
    ap.add_argument("--raw-base", default=None, help="raw URL of the base commit: changed figures shown before and after")
    ap.add_argument("--artifact-url", default=None, help="where the workflow uploaded the reports and figures")
    ap.add_argument("--limit", type=int, default=COMMENT_LIMIT, help="maximum characters of the comment")
    ap.add_argument("--output", "-o", default=None, help="write the comment here instead of stdout")
    ap.add_argument("--check", action="store_true", help="exit 1 when the committed metrics are stale")
    args = ap.parse_args(argv)
    if not 1000 <= args.limit <= 65536:
        ap.error("--limit must be between 1000 and 65536")
    review = build_review(
        args.base,
        [Path(r) for r in args.report] if args.report else None,
        artifact_url=args.artifact_url,
        raw_head=args.raw_head,
        raw_base=args.raw_base,
        figures=[Path(f) for f in args.figures] if args.figures else None,
        limit=args.limit,
    )
    if args.output:
        Path(args.output).write_text(review.text)
    else:
        sys.stdout.write(review.text)
    if args.check and review.stale:
        st = review.staleness
        print(
            f"{STALE_FLAG}: {', '.join(st.stages) or st.error}; run `dvc repro` and commit dvc.lock and the metrics.",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
