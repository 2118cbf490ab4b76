"""The pull-request review comment: what a change did to every metric and param, and the report.

    python -m pipeline.report.review [--base main] [--report reports/report.md]
        [--artifact-url URL] [--output review.md] [--check] [--limit 60000]

Reads only committed files (metric JSONs, params.yaml, dvc.yaml, dvc.lock, the report) through
`dvc metrics diff --json`, `dvc params diff --json`, `dvc status --json` and `dvc dag --dot`, so it
needs no GPU, no DVC remote, no cache and no pipeline run. The GitHub workflow posts exactly this
text; run it locally to see what reviewers will see.

The comment, in order of importance:

1. a hidden marker (`MARKER`) by which the posting workflow finds and updates its own comment;
2. a red flag when the committed metrics are stale (a stage's params, code or command changed
   since `dvc.lock` was written, or a committed output disagrees with `dvc.lock`);
3. the changed metrics, one compact table per metric folder (rows: metric, columns: the files,
   i.e. the methods), the most important rows visible and the rest collapsed;
4. the params diff;
5. the figures (a link to the workflow's artifact, or their names: relative image links do not
   render in a comment) and the report, collapsed.

It always stays under `COMMENT_LIMIT` characters (GitHub refuses comments over 65,536): when it
must cut, it cuts the report first, then collapsed metric rows, then params, then visible metric
rows, and says what it cut.

Exit status: 0; with `--check`, 1 when the metrics are stale (or staleness could not be checked).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

MARKER = "<!-- ssl-pipeline-review -->"
COMMENT_LIMIT = 60_000  # GitHub's limit is 65,536 characters; keep a margin
STALE_FLAG = "Metrics below are stale"
HEADLINE_ROWS = 12  # visible rows per metric table; the rest are collapsed
MAX_CELL = 120  # characters of one table cell (params can be long lists)
_IMPORTANT = re.compile(r"top1|acc|loss|mean")


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


def _change(c: dict) -> str:
    old, new, diff = c.get("old"), c.get("new"), c.get("diff")
    if old is None and new is not None:
        return f"{_fmt(new)} (new)"
    if new is None and old is not None:
        return f"removed (was {_fmt(old)})"
    if isinstance(diff, (int, float)) and not isinstance(diff, bool):
        return f"{_fmt(new)} ({diff:+.3g})"
    return f"{_fmt(old)} → {_fmt(new)}"


@dataclass
class MetricTable:
    folder: str
    columns: list[str]  # file stems: the methods
    rows: list[tuple[str, dict[str, str]]]  # metric key -> {column: cell}, most important first

    def render(self, lines: list[tuple[str, dict[str, str]]]) -> list[str]:
        out = [
            "| metric | " + " | ".join(f"`{_cell(c)}`" for c in self.columns) + " |",
            "|---|" + "---:|" * len(self.columns),
        ]
        out += ["| " + _cell(k) + " | " + " | ".join(_cell(cells.get(c, "")) for c in self.columns) + " |" for k, cells in lines]
        return out


def _importance(key: str) -> tuple[int, int]:
    return (0 if _IMPORTANT.search(key.rsplit(".", 1)[-1]) else 1, key.count("."))


def metric_tables(diff: dict) -> list[MetricTable]:
    """`dvc metrics diff --json` regrouped: one table per folder, one column per file (method)."""
    folders: dict[str, dict[str, dict]] = {}
    for path, metrics in sorted(diff.items()):
        if not metrics:
            continue
        p = PurePosixPath(path)
        folders.setdefault(str(p.parent), {})[p.name.removesuffix(".json")] = metrics
    tables = []
    for folder, files in folders.items():
        columns = sorted(files)
        keys: dict[str, dict[str, str]] = {}
        for col in columns:
            for key, change in files[col].items():
                keys.setdefault(key, {})[col] = _change(change if isinstance(change, dict) else {"new": change})
        order = sorted(keys, key=lambda k: (_importance(k), list(keys).index(k)))
        tables.append(MetricTable(folder, columns, [(k, keys[k]) for k in order]))
    return tables


def params_rows(diff: dict) -> list[str]:
    rows = []
    for path, params in sorted(diff.items()):
        for key, c in params.items():
            c = c if isinstance(c, dict) else {"new": c}
            rows.append(f"| `{_cell(path)}` | `{_cell(key)}` | {_cell(_fmt(c.get('old')))} | {_cell(_fmt(c.get('new')))} |")
    return rows


# --- report and figures ----------------------------------------------------------------------

_IMG_MD = re.compile(r"!\[([^\]]*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_LINK_MD = re.compile(r"(?<!!)\[([^\]]*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_IMG_HTML = re.compile(r"<img\b[^>]*>", re.I)
_ABSOLUTE = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|#|//)", re.I)


def _figure_ref(alt: str, target: str, artifact_url: str | None) -> str:
    name = PurePosixPath(target).name
    label = f"figure: {alt or name} (`{name}`)"
    return f"[{label}, in the workflow artifact]({artifact_url})" if artifact_url else f"*{label}, not shown in comments*"


def rewrite_links(md: str, artifact_url: str | None) -> str:
    """No relative links or images: they point nowhere from a comment."""

    def img(m: re.Match) -> str:
        alt, target = m.group(1), m.group(2)
        return m.group(0) if _ABSOLUTE.match(target) else _figure_ref(alt, target, artifact_url)

    def link(m: re.Match) -> str:
        text, target = m.group(1), m.group(2)
        return m.group(0) if _ABSOLUTE.match(target) else f"{text} (`{target}`)"

    def html(m: re.Match) -> str:
        src = re.search(r"""src\s*=\s*["']?([^"'\s>]+)""", m.group(0), re.I)
        if src and _ABSOLUTE.match(src.group(1)) and not src.group(1).startswith("#"):
            return m.group(0)
        return _figure_ref("", src.group(1) if src else "image", artifact_url)

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
    detail_rows: int
    params: int
    headline_rows: int  # per table


def build_review(
    base: str,
    report: Path,
    *,
    artifact_url: str | None = None,
    figures: Path | None = None,
    limit: int = COMMENT_LIMIT,
    lock: Path = Path("dvc.lock"),
) -> Review:
    staleness = stale_stages(lock)
    mdiff = _dvc_json("metrics", "diff", base)
    pdiff = _dvc_json("params", "diff", base)
    tables = metric_tables(mdiff.data) if isinstance(mdiff.data, dict) else []
    prows = params_rows(pdiff.data) if isinstance(pdiff.data, dict) else []
    figures = figures if figures is not None else report.parent / "figures"
    fig_names = sorted(p.name for p in figures.iterdir() if p.is_file()) if figures.is_dir() else []
    sections = _report_sections(rewrite_links(report.read_text(), artifact_url)) if report.is_file() else []
    n_detail = sum(max(0, len(t.rows) - HEADLINE_ROWS) for t in tables)
    max_headline = max((min(len(t.rows), HEADLINE_ROWS) for t in tables), default=0)

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
        detail_left, head_cut, detail_cut = b.detail_rows, 0, 0
        for t in tables:
            head, rest = t.rows[:HEADLINE_ROWS], t.rows[HEADLINE_ROWS:]
            shown_head = head[: b.headline_rows]
            head_cut += len(head) - len(shown_head)
            shown_rest = rest[: max(0, detail_left)]
            detail_left -= len(shown_rest)
            detail_cut += len(rest) - len(shown_rest)
            n = len(t.rows)
            body += [f"**`{t.folder}/`** ({n} changed metric{'s' * (n != 1)}, {len(t.columns)} file{'s' * (len(t.columns) != 1)}; cell: new (change))", ""]
            if shown_head:
                body += t.render(shown_head)
            if len(shown_head) < len(head):
                body += ["", f"*truncated: {len(head) - len(shown_head)} more row(s) of `{t.folder}/` omitted*"]
            if shown_rest:
                body += ["", f"<details><summary>{len(rest)} more changed metric(s) in <code>{t.folder}/</code></summary>", ""]
                body += t.render(shown_rest)
                if len(shown_rest) < len(rest):
                    body += ["", f"*truncated: {len(rest) - len(shown_rest)} row(s) omitted*"]
                body += ["", "</details>"]
            elif rest:
                body += ["", f"*truncated: {len(rest)} more row(s) of `{t.folder}/` omitted*"]
            body += [""]
        if head_cut or detail_cut:
            cut.append(f"{head_cut + detail_cut} metric row(s)")

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

        if fig_names:
            where = f"[download them from the workflow artifact]({artifact_url})" if artifact_url else "not attached to this comment"
            body += [f"<details><summary>Figures ({len(fig_names)}): {'see the link' if artifact_url else 'names only'}</summary>", ""]
            body += [f"Images do not render from relative paths in a comment: {where}.", ""]
            body += [", ".join(f"`{_cell(n)}`" for n in fig_names[:100]) + (f" and {len(fig_names) - 100} more" if len(fig_names) > 100 else ""), "", "</details>", ""]

        body += [f"<details><summary>Report ({report.as_posix()})</summary>", ""]
        if not report.is_file():
            body += [f"{report} not found: run `dvc repro` and commit it."]
        else:
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

    full = _Budget(len(sections), n_detail, len(prows), max_headline)
    text, cut = render(full)
    if len(text) > limit:
        b = full
        # least important first: report sections, collapsed metric rows, params, visible metric rows
        for fieldname in ("report_sections", "detail_rows", "params", "headline_rows"):
            lo, hi = 0, getattr(b, fieldname)
            if len(render(_replace(b, fieldname, lo))[0]) > limit:
                b = _replace(b, fieldname, lo)
                continue
            while lo < hi:  # largest value that fits
                mid = (lo + hi + 1) // 2
                if len(render(_replace(b, fieldname, mid))[0]) <= limit:
                    lo = mid
                else:
                    hi = mid - 1
            b = _replace(b, fieldname, lo)
            break
        text, cut = render(b)
    if len(text) > limit:  # only the stale flag and headings are left: cut hard, and say so
        note = f"\n\n*truncated: the comment was cut at {limit:,} characters; full comment in the workflow artifact*\n"
        text = text[: limit - len(note)] + note
        cut.append("the end of the comment")
    return Review(text, staleness, cut)


def _replace(b: _Budget, name: str, value: int) -> _Budget:
    return _Budget(**{**b.__dict__, name: value})


def review_comment(base: str, report: Path, **kwargs) -> str:
    return build_review(base, report, **kwargs).text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="main", help="git revision to compare against")
    ap.add_argument("--report", default="reports/report.md")
    ap.add_argument("--figures", default=None, help="figure folder (default: figures/ beside the report)")
    ap.add_argument("--artifact-url", default=None, help="where the workflow uploaded the report and figures")
    ap.add_argument("--limit", type=int, default=COMMENT_LIMIT, help="maximum characters of the comment")
    ap.add_argument("--output", "-o", default=None, help="write the comment here instead of stdout")
    ap.add_argument("--check", action="store_true", help="exit 1 when the committed metrics are stale")
    args = ap.parse_args(argv)
    if not 1000 <= args.limit <= 65536:
        ap.error("--limit must be between 1000 and 65536")
    review = build_review(
        args.base,
        Path(args.report),
        artifact_url=args.artifact_url,
        figures=Path(args.figures) if args.figures else None,
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
