"""The reviewer's report: one self-contained HTML file per validation run.

Everything is inline (CSS, SVG histograms, images as base64 PNG data URIs) and there is no
script, so the file opens offline, by mail or from an artifact store, and renders the same
everywhere. great-expectations' Data Docs are linked for the full expectation detail, but they
pull styles from CDNs and open unstyled offline: this report must stand on its own.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from data_contracts.run import ContractReport
from data_contracts.thresholds import Thresholds, load_thresholds
from schemas.validation import StyleFigures, ValidationReport
from tasks import storage
from tasks.storage import FACES, Workspace
from tasks.validate import publish
from tasks.validate.charts import histogram_svg

FACES_PER_STYLE = 8
SKETCHES_PER_FACE = 4
WORST_PER_METRIC = 8
MAX_REJECTED_LISTED = 200
THUMB = 64

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1d232a;
background:#fafbfc}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid
#d0d7de;padding-bottom:4px}h3{font-size:15px;margin:16px 0 6px}
.badge{display:inline-block;padding:2px 10px;border-radius:12px;font-weight:600;color:#fff}
.published{background:#1a7f37}.rejected{background:#cf222e}
table{border-collapse:collapse;margin:6px 0 12px;background:#fff}
td,th{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f3f6}td.n{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{background:#fff;border:1px solid #d0d7de;
border-radius:6px;padding:8px 12px;min-width:110px}.card b{display:block;font-size:20px}
.sheet{display:flex;align-items:flex-start;gap:6px;margin:6px 0;padding:6px;background:#fff;
border:1px solid #d0d7de;border-radius:6px}.sheet .src{border-right:2px solid #8c959f;
padding-right:8px;margin-right:4px}
figure{margin:0;text-align:center;font-size:11px;width:86px}figure img,.none{width:64px;
height:64px;display:block;margin:0 auto;image-rendering:pixelated;border:3px solid #1a7f37}
figure.bad img,figure.bad .none{border-color:#cf222e}figure.src img{border-color:#8c959f}
.none{background:#eee;line-height:64px;color:#57606a}figcaption{word-break:break-word}
.charts{display:flex;flex-wrap:wrap;gap:12px}.charts svg{background:#fff;border:1px solid
#d0d7de;border-radius:6px}.bar{fill:#0969da}.thr{stroke:#cf222e;stroke-width:2;
stroke-dasharray:4 3}.axis{stroke:#57606a}.t{font-size:12px;font-weight:600}.a,.tl{font-size:10px;
fill:#57606a}.tl{fill:#cf222e}
.ok{color:#1a7f37;font-weight:600}.fail{color:#cf222e;font-weight:600}
.keys{font-family:ui-monospace,monospace;font-size:11px;color:#57606a}
.strip{display:flex;flex-wrap:wrap;gap:6px}
"""


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _thumb(png: bytes, size: int = THUMB) -> bytes:
    """Shrink a mugshot so a report of hundreds of faces stays a few megabytes."""
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.shape[0] <= size:
        return png
    ok, out = cv2.imencode(".png", cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA))
    return out.tobytes() if ok else png


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return escape(str(value))


def _calls(calls: Mapping[str, int], top: int = 3) -> str:
    """'pencil-dodge 47%, forensic-artist 46%': the judge's calls as shares, most first."""
    total = sum(calls.values())
    if not total:
        return "–"
    return ", ".join(f"{name} {count / total:.0%}"
                     for name, count in list(calls.items())[:top])


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _style_contract(per_style: Mapping[str, StyleFigures]) -> str:
    """Per style: the pair verdict (the gate), then the old absolute share and the render
    control beside it as figures."""
    lines = ["<table><tr><th>style</th><th>pairing</th><th>pairs won</th>"
             "<th>start renders beaten</th><th>share won</th><th>threshold</th><th>verdict</th>"
             "<th>called this style (figure)</th><th>mean score: drawings</th>"
             "<th>mean score: start renders (control)</th></tr>"]
    kinds = set()
    for style, figures in per_style.items():
        p = figures.pair_verdict
        if p is None:
            continue
        kinds.add(p.score_kind or "–")
        verdict = '<td class="ok">pass</td>' if p.passed else '<td class="fail">FAIL</td>'
        lines.append(
            f"<tr><td>{escape(style)}</td><td>{escape(p.pairing)}</td>"
            f"<td class='n'>{p.pairs_won} / {p.pairs}</td>"
            f"<td class='n'>{p.renders_won} / {p.renders}</td><td class='n'>{_pct(p.share)}</td>"
            f"<td class='n'>≥ {_pct(p.threshold)}</td>{verdict}"
            f"<td class='n'>{_pct(p.absolute_share)}</td><td class='n'>"
            f"{_fmt(p.drawing_score, 2)}</td><td class='n'>{_fmt(p.render_score, 2)}</td></tr>")
    lines.append("</table>")
    if kinds:
        lines.append(f"<p>Scores are the style judge's {escape(', '.join(sorted(kinds)))} "
                     "for the row's style.</p>")
    lines.append(_pairs_against(per_style))
    return "".join(lines)


def _pairs_against(per_style: Mapping[str, StyleFigures]) -> str:
    """Pairs won by the row's style against each column's, so a reviewer sees which
    comparison a failing style loses."""
    verdicts = {s: f.pair_verdict for s, f in per_style.items()
                if f.pair_verdict is not None and f.pair_verdict.against}
    if not verdicts:
        return ""
    columns = sorted({o for p in verdicts.values() for o in p.against})
    head = "".join(f"<th>against {escape(c)}</th>" for c in columns)
    rows = []
    for style, p in verdicts.items():
        cells = "".join(
            f"<td class='n'>{p.against[c][0]} / {p.against[c][1]} "
            f"({_pct(p.against[c][0] / p.against[c][1])})</td>" if c in p.against
            else "<td class='n'>–</td>" for c in columns)
        rows.append(f"<tr><td>{escape(style)}</td>{cells}</tr>")
    return ("<p>Pairs won, by the other style of the same face:</p><table><tr><th>style</th>"
            f"{head}</tr>{''.join(rows)}</table>")


def _identity_contract(per_style: Mapping[str, StyleFigures]) -> str:
    """Per style: which identity gate judged it, its shares, and the artists' beside them."""
    lines = ["<table><tr><th>style</th><th>judged</th><th>≥ similarity floor</th>"
             "<th>artists</th><th>margin ≥ floor (nearest own mugshot)</th><th>artists</th>"
             "<th>bar</th><th>verdict</th><th>every drawing: similarity / margin (figure)</th>"
             "</tr>"]
    for style, figures in per_style.items():
        b = figures.identity_bar
        if b is None:
            continue
        verdict = '<td class="ok">pass</td>' if b.passed else '<td class="fail">FAIL</td>'
        bar = (f"≥ {b.ratio:.0%} of the artists'" if b.mode == "artists"
               else "absolute shares (see thresholds)")
        lines.append(
            f"<tr><td>{escape(style)}</td><td>{escape(b.line)}</td>"
            f"<td class='n'>{_pct(b.share_identity)}</td>"
            f"<td class='n'>{_pct(b.artist_share_identity)}</td>"
            f"<td class='n'>{_pct(b.share_margin)}</td>"
            f"<td class='n'>{_pct(b.artist_share_margin)}</td><td>{escape(bar)}</td>{verdict}"
            f"<td class='n'>{_pct(b.share_identity_all)} / {_pct(b.share_margin_all)}</td>"
            "</tr>")
    lines.append("</table>")
    return "".join(lines)


def _sketch_figure(workspace: Workspace, row: Mapping[str, Any], caption: str) -> str:
    bad = not row["accepted"]
    title = escape(", ".join(row["reasons"]) or "accepted")
    path = workspace.root / row["png_path"] if row.get("png_path") else None
    if path is not None and path.is_file():
        picture = (f'<img src="{_data_uri(path.read_bytes())}" alt="sketch {row["sketch_id"]}" '
                   f'width="{THUMB}" height="{THUMB}">')
    else:
        picture = '<div class="none">no image</div>'
    return (f'<figure class="{"bad" if bad else "good"}" title="{title}">{picture}'
            f'<figcaption>{caption}</figcaption></figure>')


def _mugshots(workspace: Workspace, face_ids: Sequence[str]) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    ids = sorted(set(face_ids))
    for start in range(0, len(ids), 500):
        rows = storage.read(workspace, FACES, columns=["face_id", "aligned_png"],
                            where=storage.where_in("face_id", ids[start:start + 500]))
        for face, png in zip(rows.column("face_id").to_pylist(),
                             rows.column("aligned_png").to_pylist(), strict=True):
            found[face] = _thumb(png)
    return found


def _caption(row: Mapping[str, Any]) -> str:
    reasons = ", ".join(row["reasons"])
    sim = _fmt(row.get("identity_similarity"), 2)
    return f"#{row['sample_index']} sim {sim}" + (f"<br><b>{escape(reasons)}</b>" if reasons
                                                   else "")


def _contact_sheets(workspace: Workspace, rows: Sequence[Mapping[str, Any]]) -> str:
    by_style: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        by_style[row["style"]][row["face_id"]].append(row)
    chosen: dict[str, list[str]] = {}
    for style, faces in by_style.items():
        # Faces with a rejected sketch first: they are what the reviewer must look at.
        order = sorted(faces, key=lambda f: (all(r["accepted"] for r in faces[f]), f))
        chosen[style] = order[:FACES_PER_STYLE]
    mugshots = _mugshots(workspace, [f for faces in chosen.values() for f in faces])
    parts = []
    for style in sorted(by_style):
        faces = by_style[style]
        parts.append(f"<h3>{escape(style)} ({len(faces)} faces, showing "
                     f"{len(chosen[style])})</h3>")
        for face in chosen[style]:
            members = sorted(faces[face], key=lambda r: r["sample_index"])
            identity = escape(members[0]["identity_id"])
            src = (f'<img src="{_data_uri(mugshots[face])}" alt="mugshot {face[:12]}" '
                   f'width="{THUMB}" height="{THUMB}">' if face in mugshots
                   else '<div class="none">no photo</div>')
            figures = "".join(_sketch_figure(workspace, r, _caption(r))
                              for r in members[:SKETCHES_PER_FACE])
            more = (f"<span>+{len(members) - SKETCHES_PER_FACE} more</span>"
                    if len(members) > SKETCHES_PER_FACE else "")
            parts.append(f'<div class="sheet"><figure class="src">{src}<figcaption>'
                         f'{identity}<br>mugshot</figcaption></figure>{figures}{more}</div>')
    return "".join(parts)


def _histograms(rows: Sequence[Mapping[str, Any]], t: Thresholds) -> str:
    s = t.sketches
    specs = [
        ("identity_similarity", "identity similarity to source",
         [(s.min_identity_similarity, "min")], (-1.0, 1.0)),
        ("identity_margin", "margin over closest other identity",
         [(s.min_identity_margin, "min")], None),
        ("style_score", "own-style score", [], (0.0, 1.0)),
        ("pixel_std", "pixel std", [(s.min_pixel_std, "blank")], None),
        ("contrast", "contrast (p99 - p1)", [(s.min_contrast, "min")], (0.0, 255.0)),
        ("neighbour_correlation", "neighbour correlation",
         [(s.min_neighbour_correlation, "noise")], (-1.0, 1.0)),
        ("saturated_share", "saturated share", [(s.max_saturated_share, "max")], (0.0, 1.0)),
        ("colour_deviation", "colour deviation", [(s.max_colour_deviation, "max")], None),
    ]
    return "".join(histogram_svg([r.get(column) for r in rows], title, thresholds=marks,
                                 bounds=bounds)
                   for column, title, marks, bounds in specs)


def _worst(workspace: Workspace, rows: Sequence[Mapping[str, Any]]) -> str:
    specs = [("identity_similarity", "lowest identity similarity", False),
             ("identity_margin", "lowest identity margin", False),
             ("style_score", "lowest own-style score", False),
             ("pixel_std", "lowest pixel std", False),
             ("neighbour_correlation", "lowest neighbour correlation", False),
             ("colour_deviation", "highest colour deviation", True)]
    parts = []
    for column, title, descending in specs:
        measured = [r for r in rows if r.get(column) is not None]
        measured.sort(key=lambda r: r[column], reverse=descending)
        if not measured:
            continue
        figures = "".join(
            _sketch_figure(workspace, r, f"{escape(r['identity_id'])} {escape(r['style'])}<br>"
                                         f"{column.split('_')[0]} {_fmt(r[column], 3)}"
                                         + (f"<br><b>{escape(', '.join(r['reasons']))}</b>"
                                            if r["reasons"] else ""))
            for r in measured[:WORST_PER_METRIC])
        parts.append(f'<h3>{escape(title)}</h3><div class="strip">{figures}</div>')
    return "".join(parts)


def _rejected_table(rows: Sequence[Mapping[str, Any]]) -> str:
    rejected = [r for r in rows if not r["accepted"]]
    if not rejected:
        return "<p>No sketch was rejected.</p>"
    lines = ["<table><tr><th>sketch</th><th>identity</th><th>style</th><th>sample</th>"
             "<th>reasons</th><th>similarity</th><th>margin</th><th>closest other</th>"
             "<th>predicted style</th></tr>"]
    for r in rejected[:MAX_REJECTED_LISTED]:
        lines.append(
            f'<tr><td class="keys">{escape(r["sketch_id"])}</td><td>{escape(r["identity_id"])}'
            f'</td><td>{escape(r["style"])}</td><td class="n">{r["sample_index"]}</td>'
            f'<td class="fail">{escape(", ".join(r["reasons"]))}</td>'
            f'<td class="n">{_fmt(r.get("identity_similarity"))}</td>'
            f'<td class="n">{_fmt(r.get("identity_margin"))}</td>'
            f'<td>{_fmt(r.get("impostor_identity"))}</td>'
            f'<td>{_fmt(r.get("style_predicted"))}</td></tr>')
    lines.append("</table>")
    if len(rejected) > MAX_REJECTED_LISTED:
        lines.append(f"<p>… and {len(rejected) - MAX_REJECTED_LISTED} more in the verdicts "
                     "file.</p>")
    return "".join(lines)


def _parameter(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    return str(value)


def _contracts(contracts: ContractReport) -> str:
    parts = []
    for suite in contracts.suites:
        state = '<span class="ok">passed</span>' if suite.success else (
            '<span class="fail">FAILED</span>')
        parts.append(f"<h3>{escape(suite.suite)}: {state} ({suite.rows} rows)</h3>")
        if suite.parameters:
            given = "; ".join(f"{k} = {_parameter(v)}" for k, v in suite.parameters.items())
            parts.append(f"<p>judged with: {escape(given)}</p>")
        parts.append("<table><tr><th>expectation</th><th>column</th><th>result</th>"
                     "<th>unexpected</th><th>mostly</th><th>failing keys (first 10)</th></tr>")
        for e in suite.expectations:
            unexpected = "" if e.unexpected_count is None else str(e.unexpected_count)
            if e.unexpected_percent is not None:
                unexpected += f" ({e.unexpected_percent:.1f} %)"
            keys = ", ".join(e.failing_keys[:10])
            parts.append(
                f"<tr><td>{escape(e.expectation)}</td><td>{_fmt(e.column)}</td>"
                f'<td class="{"ok" if e.success else "fail"}">'
                f'{"pass" if e.success else "fail"}</td><td class="n">{unexpected}</td>'
                f'<td class="n">{_fmt(e.mostly, 2)}</td><td class="keys">{escape(keys)}</td></tr>')
        parts.append("</table>")
    return "".join(parts)


def _link(report: Path, target: str | None) -> str:
    if not target:
        return "–"
    path = Path(target.removeprefix("file://"))
    relative = os.path.relpath(path, report.parent) if path.is_absolute() else target
    return f'<a href="{escape(relative)}">{escape(relative)}</a>'


def render_report(workspace: Workspace, outcome: ValidationReport, thresholds: Thresholds,
                  report_path: Path) -> str:
    folder = workspace.root / Path(outcome.verdicts_path or "").parent
    rows = storage.read_parquet(workspace.root / outcome.verdicts_path).to_pylist()
    contracts = ContractReport.model_validate_json(
        (folder / publish.CONTRACTS_JSON).read_text())
    details = json.loads((folder / publish.DATASET_JSON).read_text())
    d, m = outcome.dataset, outcome.metrics
    cards = [("sketches", d.sketches), ("accepted", d.accepted), ("rejected", d.rejected),
             ("acceptance", f"{d.acceptance_rate:.1%}"), ("identities", d.identities),
             ("metrics computed", m.computed),
             ("metrics rescored (new gallery only)", m.rescored),
             ("metrics carried (new faces beat none)", m.carried), ("metrics reused", m.reused)]
    card_html = "".join(f'<div class="card">{escape(k)}<b>{escape(str(v))}</b></div>'
                        for k, v in cards)
    reasons = "".join(f"<tr><td>{escape(k)}</td><td class='n'>{v}</td></tr>"
                      for k, v in sorted(d.reasons.items(), key=lambda kv: -kv[1]))
    styles = "".join(
        f"<tr><td>{escape(s)}</td><td class='n'>{f.sketches}</td><td class='n'>{f.accepted}"
        f"</td><td class='n'>{f.identities}</td><td class='n'>"
        f"{_fmt(f.mean_identity_similarity)}</td><td class='n'>{_fmt(f.mean_identity_margin)}"
        f"</td><td class='n'>{f.wrong_style}</td><td>{escape(_calls(f.style_calls))}</td>"
        f"<td class='n'>{_fmt(f.frechet, 2)}</td>"
        f"<td>{_fmt(f.frechet_reference)} {_fmt(f.frechet_samples)}</td></tr>"
        for s, f in d.per_style.items())
    div = d.diversity
    per_identity = details.get("per_identity", {})
    starved = [k for k, v in per_identity.items() if v == 0]
    state = "published" if outcome.published else "rejected"
    cv = details.get("classifier_cv_accuracy")
    status_line = (f"Version <b>{escape(outcome.version)}</b> is "
                   f'<span class="badge {state}">{state.upper()}</span>. Current published '
                   f"version: <b>{escape(outcome.current_version or 'none')}</b>.")
    if not outcome.published:
        status_line += (" This run did not change the published version; the failed "
                        "expectations are listed under Contracts.")
    failed = "".join(f"<li>{escape(f)}</li>" for f in outcome.failed_expectations)
    generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>clip4sketch validation {escape(outcome.version)} ({state})</title>
<style>{CSS}</style></head><body>
<h1>Sketch dataset validation</h1>
<p>Run <code>{escape(outcome.run_id)}</code>, {generated}. {status_line}</p>
<section id="summary"><h2>Summary</h2><div class="cards">{card_html}</div>
{f'<p class="fail">Failed expectations:</p><ul>{failed}</ul>' if failed else ''}
<table><tr><th>metrics version</th><td><code>{escape(m.metrics_version)}</code></td></tr>
<tr><th>style check</th><td>{_fmt(m.style_method)} over {escape(', '.join(m.style_classes))}
(cross-validated accuracy {_fmt(cv, 2)})</td></tr>
<tr><th>contracts</th><td>{'reused from the identical earlier check' if outcome.reused_contracts
                           else 'checked in this run'}</td></tr>
<tr><th>accepted per identity</th><td>min {d.accepted_per_identity[0]}, median
{d.accepted_per_identity[1]}, max {d.accepted_per_identity[2]}; identities with none:
{escape(', '.join(starved[:20]) or 'none')}</td></tr>
<tr><th>diversity (identity, style groups)</th><td>{div.groups} groups: {div.in_band} in band,
{div.too_similar} too similar, {div.drifting} drifting; {div.single_sample} single-sample</td></tr>
<tr><th>Data Docs</th><td>{_link(report_path, outcome.data_docs)} (great-expectations' pages
load their styles from the network and look unstyled offline)</td></tr>
<tr><th>verdicts</th><td><code>{escape(outcome.verdicts_path or '–')}</code></td></tr>
<tr><th>manifest</th><td><code>{escape(outcome.manifest_path or 'not published')}</code></td></tr>
</table>
<h3>Rejections by reason</h3><table><tr><th>reason</th><th>sketches</th></tr>{reasons or
'<tr><td colspan=2>none</td></tr>'}</table>
<h3>Per style</h3><table><tr><th>style</th><th>sketches</th><th>accepted</th><th>identities</th>
<th>mean similarity</th><th>mean margin</th><th>wrong style</th><th>judge called</th>
<th>Fréchet</th>
<th>reference (generated, reference n)</th></tr>{styles}</table>
<h3 id="identity-contract">Identity contract: against the artists, face for face</h3>
<p>A style drawn from real artists' sketches, with enough of them in the workspace, is judged
against those artists on the faces they drew: the shares of its drawings that reach the
per-sketch identity thresholds (SFace similarity to the own mugshot, margin over the closest
other identity in the gallery) must reach the bar's share of the artists' own. Artists' drawings
sit away from the photo, so the absolute shares, set for photo-like drawings, would reject
them too. Every other style is judged by the absolute shares.</p>
{_identity_contract(d.per_style)}
<h3 id="style-contract">Style contract: pairs of drawings of the same face</h3>
<p>For every face drawn in two styles S and T, the style judge must score S higher on the S
drawing than on the T drawing; a face drawn in S only is compared with its start render (the
image its generator starts from). The person is in both images, so what the judge reads in
the people drawn cancels. Each style must win at least the threshold's share of its
comparisons; a style with nothing to compare is not judged and fails. The share of drawings
the judge calls their own style, and its mean score for the style on the drawings and on
their start renders (the render control), are figures beside it, not gates.</p>
{_style_contract(d.per_style)}</section>
<section id="histograms"><h2>Metric histograms</h2><p>Dashed red lines are the thresholds of
<code>data_contracts/thresholds.yaml</code>.</p><div class="charts">
{_histograms(rows, thresholds)}</div></section>
<section id="contact-sheets"><h2>Contact sheets</h2><p>Each row: the source mugshot, then its
sketches (green border accepted, red rejected; hover for reasons).</p>
{_contact_sheets(workspace, rows)}</section>
<section id="worst"><h2>Worst sketches by metric</h2>{_worst(workspace, rows)}</section>
<section id="rejected"><h2>Rejected sketches</h2>{_rejected_table(rows)}</section>
<section id="contracts"><h2>Contracts</h2>{_contracts(contracts)}</section>
</body></html>
"""


def write_report(workspace: Workspace, outcome: ValidationReport,
                 thresholds: Thresholds) -> Path:
    path = Path(outcome.report_path)
    html = render_report(workspace, outcome, thresholds, path)
    return storage.write_bytes_atomic(html.encode("utf-8"), path)


@task(name="validate-report", cache_policy=NO_CACHE)
def report_task(workspace: str, outcome: ValidationReport, thresholds: str | None) -> str:
    """Thin Prefect wrapper of ``write_report``: the thresholds file read by path."""
    return str(write_report(Workspace.open(workspace), outcome, load_thresholds(thresholds)))
