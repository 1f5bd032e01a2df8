"""A self-contained HTML report of a :class:`emms.pipeline.Ranking`: the answer first, then the evidence.

Order: the recommendation and how sure it is (:mod:`emms.answer`), how often each model came out
best, the ranking table, the scores with their intervals, agreement with a fine-tuned truth, a
fine-tuning race when one ran, the encoder weights, timings and notes.

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
from matplotlib.ticker import MaxNLocator

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em} h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}
td,th{padding:.25em .7em;border-bottom:1px solid #eee;text-align:right;white-space:nowrap}
th{background:#f5f5f5} td:first-child,th:first-child{text-align:left} .best{font-weight:bold;color:#075}
.meta{color:#555} img{max-width:100%;border:1px solid #eee} .na{color:#999} .scroll{overflow-x:auto}
#answer{background:#f1f8f5;border:1px solid #bfe0d2;border-radius:6px;padding:.6em 1.2em;margin:1em 0}
#answer .pick{font-size:1.35em;margin:.3em 0} #answer p{margin:.45em 0}
"""
# Width of a model-name label in the plots (longer names are shortened in the middle).
_LABEL_CHARS = 34
_PICK, _OTHER = "#2a9d8f", "#457b9d"


def render_html(ranking) -> str:
    """Render ``ranking`` as one HTML document (string)."""
    meta = ranking.meta
    answer = ranking.answer()
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>EMMS ranking — {_e(meta.get('data', ''))}</title>",
             f"<style>{_CSS}</style></head><body>",
             f"<h1>Which model to fine-tune: {_e(meta.get('data', ''))}</h1>",
             f"<p class='meta'>task <b>{_e(meta.get('task', ''))}</b> · {meta.get('n_samples', '?')} samples · "
             f"{len(meta.get('models', []))} models · metrics: {_e(', '.join(ranking.metrics))} · "
             f"encoders: {_e(', '.join(meta.get('encoders', [])) or '—')}</p>",
             _answer_section(answer)]
    if answer["p_best"]:
        n = meta.get("resamples", 0)
        parts += ["<h2>How often each model came out best</h2>",
                  f"<p class='meta'>{_e(answer['metric'])} re-scored on {n} random halves of the samples "
                  "(stratified by class where there are classes); the share of halves in which each model scored best.</p>",
                  _img(_p_best_figure(answer))]
    parts += ["<h2>Ranking</h2>", _ranking_table(ranking, answer),
              "<h2>Scores per model</h2>",
              "<p class='meta'>Each panel is one metric, best at the top; the axes start at the lowest score, not at "
              "zero (scores have arbitrary offsets)."
              + (f" Bars on {_e(answer['metric'])}: {_interval_words()}." if answer["intervals"] else "") + "</p>",
              _img(_scores_figure(ranking, answer))]
    if ranking.correlations is not None:
        parts += ["<h2>Agreement with fine-tuned performance</h2>", _correlation_table(ranking.correlations),
                  _img(_truth_figure(ranking))]
    if ranking.selection:
        parts += ["<h2>Fine-tuning race</h2>", _race_section(answer["race"])]
    parts += _layers_section(meta, answer["recommended"])
    parts += _weights_section(ranking)
    parts += ["<h2>Timings</h2>", _timings_table(ranking), _img(_timings_figure(ranking))]
    if ranking.notes:
        parts += ["<h2>Notes</h2><ul>"] + [f"<li>{_e(n)}</li>" for n in ranking.notes] + ["</ul>"]
    parts.append("</body></html>")
    return "\n".join(parts)


def _answer_section(answer: dict) -> str:
    """The recommendation block: the pick in large type, then one paragraph per sentence."""
    lines = [f"<section id='answer'><p class='pick'>Recommended: <b id='recommended'>{_e(answer['recommended'])}</b></p>"]
    lines += [f"<p>{_e(s)}</p>" for s in answer["sentences"][1:]]
    return "".join(lines) + "</section>"


def _interval_words() -> str:
    from emms.answer import INTERVAL

    return (f"{INTERVAL:.0%} range of the half-sample scores, centred on the full-sample score; every model is scored "
            "on the same halves, so the differences between models are steadier than overlapping bars suggest "
            "(the share of halves each model wins, above, is the paired comparison)")


def _ranking_table(ranking, answer: dict) -> str:
    wide = ranking.wide("score")
    ranks = ranking.wide("rank")
    metrics = list(wide.columns)
    intervals = answer["intervals"] or {}
    head = "<tr><th>model</th>"
    head += "<th>best in resamples</th>" if answer["p_best"] else ""
    head += "".join(f"<th>{_e(m)} (rank)</th>" + (f"<th>{_e(m)} interval</th>" if m == answer["metric"] and intervals
                                                   else "") for m in metrics)
    head += "<th>fine-tuned</th>" if ranking.truth else ""
    rows = [head + "</tr>"]
    for model in wide.index:
        cells = [f"<td>{_e(model)}</td>"]
        if answer["p_best"]:
            cells.append(f"<td>{answer['p_best'].get(model, 0.0):.0%}</td>")
        for metric in metrics:
            score = wide.loc[model, metric]
            if not np.isfinite(score):
                cells.append("<td class='na' title='not scored: see the notes'>—</td>")
            else:
                rank = int(ranks.loc[model, metric])
                cls = " class='best'" if rank == 1 else ""
                cells.append(f"<td{cls}>{score:.4g} ({rank})</td>")
            if metric == answer["metric"] and intervals:
                interval = intervals.get(model)
                cells.append(f"<td class='meta'>[{interval[0]:.4g}, {interval[1]:.4g}]</td>" if interval else "<td>—</td>")
        if ranking.truth:
            cells.append(f"<td>{ranking.truth[model]:.4g}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return "<div class='scroll'><table>" + "".join(rows) + "</table></div>"


def _correlation_table(corr) -> str:
    cols = [c for c in corr.columns if c != "metric"]
    rows = ["<tr><th>metric</th>" + "".join(f"<th>{_e(c)}</th>" for c in cols) + "</tr>"]
    for rec in corr.to_dict("records"):
        rows.append(f"<tr><td>{_e(rec['metric'])}</td>" + "".join(f"<td>{_fmt(rec[c])}</td>" for c in cols) + "</tr>")
    note = ("<p class='meta'>n/a: too few models for a rank correlation (it needs 3; with 2 models each "
            "correlation is ±1).</p>" if "n_models" in corr and (corr["n_models"] < 3).any() else "")
    return "<table>" + "".join(rows) + "</table>" + note


def _race_section(race: dict) -> str:
    """The fine-tuning race: its summary, every model's predicted fine-tuned score with its interval
    and its screen score, and the raced models' learning curves."""
    metric = _e(race["metric"] or "score")
    rows = ["<tr><th>model</th><th>predicted fine-tuned " + metric + "</th><th>interval</th><th>status</th>"
            "<th>screen " + metric + " (share of the train split)</th></tr>"]
    for r in race["models"]:
        cls = " class='best'" if r["model"] == race["recommended"] else ""
        interval = (f"[{_fmt(r['low'])}, {_fmt(r['high'])}]" if r["low"] is not None and r["high"] is not None else "—")
        screen = "—" if r.get("screen") is None else f"{_fmt(r['screen'])} ({r['screen_fraction']:g})"
        rows.append(f"<tr><td{cls}>{_e(r['model'])}</td><td>{_fmt(r['predicted'])}</td><td>{interval}</td>"
                    f"<td>{_e(r['status'] or '')}</td><td>{screen}</td></tr>")
    parts = [f"<p>{_e(race['summary'])}</p>", f"<p>{_e(race['how_sure'])}</p>" if race.get("how_sure") else "",
             "<table>", *rows, "</table>"]
    if race.get("curves"):
        parts += ["<p class='meta'>Learning curves of the raced models: validation score after each epoch of the "
                  "full protocol; a dashed line and bar: a stopped run's extrapolated final score and its interval, "
                  "a bar alone: a finished run's interval. Screen runs have schedules of their own and are not "
                  "drawn.</p>", _img(_curves_figure(race))]
    return "".join(parts)


def _curves_figure(race: dict):
    """Validation score per epoch of each raced model; stopped runs extended to their prediction."""
    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.subplots()
    by_model = {r["model"]: r for r in race["models"]}
    for model, curve in race["curves"].items():
        if not curve:
            continue
        best = model == race["recommended"]
        epochs = [p["epoch"] for p in curve]
        line, = ax.plot(epochs, [p["val"] for p in curve], marker="o", lw=2.4 if best else 1.3,
                        label=_label(model, 28) + (" (recommended)" if best else ""))
        row = by_model.get(model, {})
        if row.get("predicted") is None or row.get("low") is None:
            continue
        end = race["epochs"] or epochs[-1]
        if end != epochs[-1]:
            ax.plot([epochs[-1], end], [curve[-1]["val"], row["predicted"]], ls="--", color=line.get_color())
        ax.errorbar([end], [row["predicted"]], yerr=[[row["predicted"] - row["low"]], [row["high"] - row["predicted"]]],
                    color=line.get_color(), capsize=3, fmt="none")
    ax.set_xlabel("epoch of the full protocol")
    ax.set_ylabel(f"validation {race['metric'] or 'score'}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=7, loc="best")
    return fig


def _weights_section(ranking) -> list[str]:
    rows = ranking.table[ranking.table["weights"].map(lambda w: isinstance(w, dict))]
    if not len(rows):
        return []
    head = ["<h2>EMMS foundation-encoder weights</h2>",
            "<p class='meta'>The simplex weight t of each encoder's F-labels in EMMS's regression, per model.</p>"]
    encoders = list(rows.iloc[0]["weights"])
    values = np.array([[w.get(enc, 0.0) for enc in encoders] for w in rows["weights"]])
    if np.ptp(values, axis=0).max() < 0.01:  # one bar repeated for every model says nothing
        same = ", ".join(f"{_e(enc)} {v:.2f}" for enc, v in zip(encoders, values.mean(axis=0)))
        return head + [f"<p>The weights are the same for every model (within 0.01): {same}.</p>"]
    return head + [_img(_weights_figure(rows, encoders, values))]


def _layers_section(meta: dict, model: str) -> list[str]:
    """Every scored layer of the recommended model, one column per metric, the kept layer in bold
    (rankings with a layer choice such as the default ``best``; nothing otherwise)."""
    scores = [r for r in meta.get("layer_scores", []) if r["model"] == model]
    if not scores:
        return []
    kept = {(r["metric"], r["layer"]) for r in meta.get("layer_chosen", []) if r["model"] == model}
    metrics = list(dict.fromkeys(r["metric"] for r in scores))
    by_cell = {(r["layer"], r["metric"]): r["score"] for r in scores}
    rows = ["<tr><th>layer</th>" + "".join(f"<th>{_e(m)}</th>" for m in metrics) + "</tr>"]
    for layer in dict.fromkeys(r["layer"] for r in scores):
        cells = []
        for metric in metrics:
            text = _fmt(by_cell.get((layer, metric), float("nan")))
            cells.append(f"<td class='best'>{text}</td>" if (metric, layer) in kept else f"<td>{text}</td>")
        rows.append(f"<tr><td>{_e(layer)}</td>" + "".join(cells) + "</tr>")
    return [f"<h2 id='layers'>Layers of {_e(model)}</h2>",
            f"<p class='meta'>Layer choice <b>{_e(meta.get('layers'))}</b>: each layer's pooled features scored "
            "(0 = the earliest stage); in bold the layer each metric kept.</p>",
            "<table>" + "".join(rows) + "</table>"]


def _timings_table(ranking) -> str:
    t = ranking.timings.groupby("stage", sort=False)["seconds"].sum()
    scoring = ranking.table.groupby("metric", sort=False)["seconds"].sum()
    rows = ["<tr><th>stage</th><th>seconds</th></tr>"]
    rows += [f"<tr><td>{_e(s)}</td><td>{v:.3f}</td></tr>" for s, v in t.items()]
    rows += [f"<tr><td>score: {_e(m)}</td><td>{v:.3f}</td></tr>" for m, v in scoring.items()]
    return "<table>" + "".join(rows) + "</table>"


def _p_best_figure(answer: dict):
    shares = sorted(answer["p_best"].items(), key=lambda kv: kv[1])
    fig = Figure(figsize=(8, 0.32 * len(shares) + 1.0), layout="constrained")
    ax = fig.subplots()
    labels = [_label(m) for m, _ in shares]
    values = [v for _, v in shares]
    ax.barh(labels, values, color=[_PICK if m == answer["recommended"] else _OTHER for m, _ in shares])
    for y, v in enumerate(values):
        ax.text(v + 0.01, y, f"{v:.0%}", va="center", fontsize=8)
    ax.set_xlim(0, 1.1)
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0], ["0%", "25%", "50%", "75%", "100%"])
    ax.set_xlabel(f"share of resamples in which the model scored best by {answer['metric']}")
    ax.tick_params(axis="y", labelsize=8)
    return fig


def _scores_figure(ranking, answer: dict):
    metrics = ranking.metrics
    ncols = min(3, len(metrics))
    nrows = int(np.ceil(len(metrics) / ncols))
    fig = Figure(figsize=(5.6 * ncols, max(1.8, 0.3 * _n_models(ranking) + 1.0) * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    intervals = answer["intervals"] or {}
    for ax, metric in zip(axes.flat, metrics):
        # a dot plot over the scores' own range: scores have arbitrary offsets, so bars from 0 mislead
        rows = ranking.table[ranking.table["metric"] == metric].sort_values("score")
        labels = [_label(m) for m in rows["model"]]
        colors = [_PICK if r == 1 else _OTHER for r in rows["rank"]]
        if metric == answer["metric"] and intervals:
            low = [intervals.get(m, [s, s])[0] for m, s in zip(rows["model"], rows["score"])]
            high = [intervals.get(m, [s, s])[1] for m, s in zip(rows["model"], rows["score"])]
            ax.hlines(labels, low, high, color="#9ab", linewidth=3, alpha=0.8)
        else:
            ax.hlines(labels, rows["score"].min(), rows["score"], color="#ccd", linewidth=1)
        ax.scatter(rows["score"], labels, color=colors, zorder=3)
        ax.margins(x=0.08)
        ax.set_title(f"{metric} (higher = better)", fontsize=10)
        ax.tick_params(axis="y", labelsize=8)
        ax.tick_params(axis="x", labelsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(5))
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    return fig


def _weights_figure(rows, encoders: list[str], values: np.ndarray):
    labels = [_label(m) for m in rows["model"]]
    fig = Figure(figsize=(8.5, 0.32 * len(labels) + 1.4), layout="constrained")
    ax = fig.subplots()
    left = np.zeros(len(labels))
    for j, enc in enumerate(encoders):
        ax.barh(labels, values[:, j], left=left, label=enc)
        left += values[:, j]
    ax.set_xlim(0, 1)
    ax.set_xlabel("weight t (sums to 1)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.tick_params(axis="y", labelsize=8)
    return fig


def _truth_figure(ranking):
    metrics = ranking.metrics
    ncols = min(3, len(metrics))
    nrows = int(np.ceil(len(metrics) / ncols))
    fig = Figure(figsize=(5.0 * ncols, 3.9 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    corr = ranking.correlations.set_index("metric")
    for ax, metric in zip(axes.flat, metrics):
        rows = ranking.table[ranking.table["metric"] == metric]
        x = rows["score"].to_numpy(float)
        y = np.array([ranking.truth[m] for m in rows["model"]])
        ax.scatter(x, y, color="#264653", zorder=3)
        span = np.ptp(x) or 1.0
        middle = x.min() + span / 2
        for xi, yi, name in zip(x, y, rows["model"]):
            # labels point inwards, so none runs off the panel
            right_half = xi > middle
            ax.annotate(_label(str(name).removeprefix("builtin:"), 22), (xi, yi), fontsize=7, alpha=0.85,
                        xytext=(-4 if right_half else 4, 3), textcoords="offset points",
                        ha="right" if right_half else "left")
        ax.set_xlim(x.min() - 0.08 * span, x.max() + 0.08 * span)
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.margins(y=0.12)
        tau = corr.loc[metric, "weighted_tau"] if "weighted_tau" in corr.columns else float("nan")
        ax.set_title(f"{metric}: weighted τ = {_fmt(tau)}", fontsize=9)
        ax.set_xlabel("score")
        ax.set_ylabel("fine-tuned")
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    return fig


def _timings_figure(ranking):
    t = ranking.timings.copy()
    t["label"] = [f"{s}: {_label(m, 28)}" if m else s for s, m in zip(t["stage"], t["model"])]
    scoring = ranking.table.groupby("metric", sort=False)["seconds"].sum()
    labels = list(t["label"]) + [f"score: {m}" for m in scoring.index]
    values = list(t["seconds"]) + list(scoring.values)
    fig = Figure(figsize=(8, 0.28 * len(labels) + 1.0), layout="constrained")
    ax = fig.subplots()
    ax.barh(labels[::-1], values[::-1], color="#e9c46a")
    ax.set_xlabel("seconds")
    ax.tick_params(axis="y", labelsize=7)
    return fig


def _img(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return f"<img alt='plot' src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'>"


def _label(name: str, width: int = _LABEL_CHARS) -> str:
    """``name`` shortened in the middle to ``width`` characters (both ends say which model it is)."""
    name = str(name)
    if len(name) <= width:
        return name
    keep = width - 1
    return name[: keep - keep // 2] + "…" + name[-(keep // 2):]


def _n_models(ranking) -> int:
    return len(set(ranking.table["model"]))


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (float, np.floating)):
        return "n/a" if not np.isfinite(value) else f"{value:.3f}"
    return _e(value)


def _e(value) -> str:
    return html.escape(str(value))
