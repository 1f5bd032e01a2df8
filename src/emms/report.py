"""A self-contained HTML report of a :class:`emms.pipeline.Ranking`.

Plots are drawn through matplotlib's object API (``matplotlib.figure.Figure``, no pyplot, so the
host's backend is never switched) and embedded as base64 PNG, so the file has no external
references and opens anywhere.
"""

from __future__ import annotations

import base64
import html
import io

import numpy as np
from matplotlib.figure import Figure

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em} h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0} td,th{padding:.25em .7em;border-bottom:1px solid #eee;text-align:right}
th{background:#f5f5f5} td:first-child,th:first-child{text-align:left} .best{font-weight:bold;color:#075}
.meta{color:#555} img{max-width:100%;border:1px solid #eee}
"""


def render_html(ranking) -> str:
    """Render ``ranking`` as one HTML document (string)."""
    meta = ranking.meta
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>EMMS ranking — {_e(meta.get('data', ''))}</title>",
             f"<style>{_CSS}</style></head><body>",
             f"<h1>EMMS model ranking: {_e(meta.get('data', ''))}</h1>",
             f"<p class='meta'>task <b>{_e(meta.get('task', ''))}</b> · {meta.get('n_samples', '?')} samples · "
             f"{len(meta.get('models', []))} models · encoders: {_e(', '.join(meta.get('encoders', [])) or '—')}</p>",
             "<h2>Ranking</h2>", _ranking_table(ranking),
             "<h2>Scores per model</h2>", _img(_scores_figure(ranking))]
    weights = ranking.table[ranking.table["weights"].map(lambda w: isinstance(w, dict))]
    if len(weights):
        parts += ["<h2>EMMS foundation-encoder weights</h2>",
                  "<p class='meta'>The simplex weight t of each encoder's F-labels in EMMS's regression, per model.</p>",
                  _img(_weights_figure(weights))]
    if ranking.correlations is not None:
        parts += ["<h2>Agreement with fine-tuned performance</h2>", _correlation_table(ranking.correlations),
                  _img(_truth_figure(ranking))]
    parts += ["<h2>Timings</h2>", _timings_table(ranking), _img(_timings_figure(ranking))]
    if ranking.notes:
        parts += ["<h2>Notes</h2><ul>"] + [f"<li>{_e(n)}</li>" for n in ranking.notes] + ["</ul>"]
    parts.append("</body></html>")
    return "\n".join(parts)


def _ranking_table(ranking) -> str:
    table = ranking.table
    metrics = ranking.metrics
    first = metrics[0]
    order = list(table[table["metric"] == first].sort_values("rank")["model"])
    order += [m for m in dict.fromkeys(table["model"]) if m not in order]
    head = "<tr><th>model</th>" + "".join(f"<th>{_e(m)} (rank)</th>" for m in metrics)
    head += "<th>fine-tuned</th>" if ranking.truth else ""
    rows = [head + "</tr>"]
    for model in order:
        cells = [f"<td>{_e(model)}</td>"]
        for metric in metrics:
            hit = table[(table["model"] == model) & (table["metric"] == metric)]
            if hit.empty:
                cells.append("<td>—</td>")
                continue
            r = hit.iloc[0]
            cls = " class='best'" if int(r["rank"]) == 1 else ""
            cells.append(f"<td{cls}>{r['score']:.4g} ({int(r['rank'])})</td>")
        if ranking.truth:
            cells.append(f"<td>{ranking.truth[model]:.4g}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return "<table>" + "".join(rows) + "</table>"


def _correlation_table(corr) -> str:
    cols = [c for c in corr.columns if c != "metric"]
    rows = ["<tr><th>metric</th>" + "".join(f"<th>{_e(c)}</th>" for c in cols) + "</tr>"]
    for rec in corr.to_dict("records"):
        rows.append(f"<tr><td>{_e(rec['metric'])}</td>" + "".join(f"<td>{_fmt(rec[c])}</td>" for c in cols) + "</tr>")
    return "<table>" + "".join(rows) + "</table>"


def _timings_table(ranking) -> str:
    t = ranking.timings.groupby("stage", sort=False)["seconds"].sum()
    scoring = ranking.table.groupby("metric", sort=False)["seconds"].sum()
    rows = ["<tr><th>stage</th><th>seconds</th></tr>"]
    rows += [f"<tr><td>{_e(s)}</td><td>{v:.3f}</td></tr>" for s, v in t.items()]
    rows += [f"<tr><td>score: {_e(m)}</td><td>{v:.3f}</td></tr>" for m, v in scoring.items()]
    return "<table>" + "".join(rows) + "</table>"


def _scores_figure(ranking):
    metrics = ranking.metrics
    ncols = min(3, len(metrics))
    nrows = int(np.ceil(len(metrics) / ncols))
    fig = Figure(figsize=(5.2 * ncols, 0.35 * _n_models(ranking) * nrows + 1.6))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        # a dot plot over the scores' own range: scores have arbitrary offsets, so bars from 0 mislead
        rows = ranking.table[ranking.table["metric"] == metric].sort_values("score")
        colors = ["#2a9d8f" if r == 1 else "#457b9d" for r in rows["rank"]]
        ax.hlines(rows["model"], rows["score"].min(), rows["score"], color="#ccd", linewidth=1)
        ax.scatter(rows["score"], rows["model"], color=colors, zorder=3)
        ax.margins(x=0.08)
        ax.set_title(f"{metric} (higher = better)", fontsize=10)
        ax.tick_params(axis="y", labelsize=8)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def _weights_figure(rows):
    models = list(rows["model"])
    encoders = list(rows.iloc[0]["weights"])
    fig = Figure(figsize=(8.5, 0.35 * len(models) + 1.4))
    ax = fig.subplots()
    left = np.zeros(len(models))
    for enc in encoders:
        vals = np.array([w.get(enc, 0.0) for w in rows["weights"]])
        ax.barh(models, vals, left=left, label=enc)
        left += vals
    ax.set_xlim(0, 1)
    ax.set_xlabel("weight t (sums to 1)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    return fig


def _truth_figure(ranking):
    metrics = ranking.metrics
    ncols = min(3, len(metrics))
    nrows = int(np.ceil(len(metrics) / ncols))
    fig = Figure(figsize=(4.6 * ncols, 3.6 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    corr = ranking.correlations.set_index("metric")
    tau_col = next((c for c in corr.columns if c.startswith("weighted_tau")), None)
    for ax, metric in zip(axes.flat, metrics):
        rows = ranking.table[ranking.table["metric"] == metric]
        x = rows["score"].to_numpy(float)
        y = np.array([ranking.truth[m] for m in rows["model"]])
        ax.scatter(x, y, color="#264653")
        for xi, yi, name in zip(x, y, rows["model"]):
            ax.annotate(str(name).split(":")[-1], (xi, yi), fontsize=7, alpha=0.8)
        title = metric if tau_col is None else f"{metric}: {tau_col} = {corr.loc[metric, tau_col]:.3f}"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("score")
        ax.set_ylabel("fine-tuned")
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def _timings_figure(ranking):
    t = ranking.timings.copy()
    t["label"] = [f"{s}: {m}" if m else s for s, m in zip(t["stage"], t["model"])]
    scoring = ranking.table.groupby("metric", sort=False)["seconds"].sum()
    labels = list(t["label"]) + [f"score: {m}" for m in scoring.index]
    values = list(t["seconds"]) + list(scoring.values)
    fig = Figure(figsize=(7, 0.3 * len(labels) + 1.2))
    ax = fig.subplots()
    ax.barh(labels[::-1], values[::-1], color="#e9c46a")
    ax.set_xlabel("seconds")
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    return fig


def _img(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return f"<img alt='plot' src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'>"


def _n_models(ranking) -> int:
    return len(set(ranking.table["model"]))


def _fmt(value) -> str:
    if isinstance(value, (float, np.floating)):
        return "—" if not np.isfinite(value) else f"{value:.3f}"
    return _e(value)


def _e(value) -> str:
    return html.escape(str(value))
