"""The study's report: figures (PNG + SVG), one Markdown and one self-contained HTML file.

Both files are rendered from one list of blocks (heading, paragraph, table, figure), so they say the
same thing; the HTML embeds its figures, so it is one file to share.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PAPER = {"ar": {"rd_star": 15.0}, "mdm": {"rd_star": 500.0}}
"""R_D* reported by 2507.15857 (AR ≈ 15, MDM ≈ 500)."""
COLORS = {"ar": "tab:blue", "mdm": "tab:red", "ar_orderings": "tab:green"}


@dataclass
class Block:
    kind: str  # "h1" | "h2" | "p" | "table" | "figure" | "code"
    content: Any


def fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) >= 1e4 or abs(value) < 1e-3 else f"{value:.{digits}f}"
    return str(value)


def to_markdown(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        if b.kind in ("h1", "h2"):
            out.append(("# " if b.kind == "h1" else "## ") + b.content)
        elif b.kind == "p":
            out.append(b.content)
        elif b.kind == "code":
            out.append("```\n" + b.content.rstrip() + "\n```")
        elif b.kind == "table":
            header, rows = b.content
            out.append("\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                                 + ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]))  # fmt: skip
        elif b.kind == "figure":
            path, caption = b.content
            out.append(f"![{caption}]({path.name})\n\n*{caption}*")
    return "\n\n".join(out) + "\n"


def to_html(blocks: list[Block], title: str) -> str:
    body = []
    for b in blocks:
        if b.kind in ("h1", "h2"):
            body.append(f"<{b.kind}>{html.escape(b.content)}</{b.kind}>")
        elif b.kind == "p":
            body.append(f"<p>{html.escape(b.content)}</p>")
        elif b.kind == "code":
            body.append(f"<pre>{html.escape(b.content)}</pre>")
        elif b.kind == "table":
            header, rows = b.content
            head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
            cells = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
        elif b.kind == "figure":
            path, caption = b.content
            data = base64.b64encode(path.read_bytes()).decode()
            body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
                        f"<figcaption>{html.escape(caption)}</figcaption></figure>")  # fmt: skip
    style = (
        "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.45}"
        "table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.25rem .6rem;"
        "text-align:right}th{background:#f3f3f3}img{max-width:100%}pre{background:#f6f6f6;padding:1rem;overflow:auto}"
    )
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")  # fmt: skip


def save_figure(fig, out: Path, name: str) -> Path:
    """PNG (embedded in the HTML) and SVG (for papers) side by side; returns the PNG."""
    from unmask.checkpoint import atomic_path

    png = out / f"{name}.png"
    for path, options in ((png, {"dpi": 130}), (out / f"{name}.svg", {})):
        with atomic_path(path) as tmp:  # whole or not at all; a full disk is one line naming the file
            fig.savefig(tmp, format=path.suffix[1:], bbox_inches="tight", **options)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return png


def figure_loss_vs_epochs(rows: list[dict], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = sorted({r["unique_tokens"] for r in rows})
    fig, axes = plt.subplots(1, len(budgets), figsize=(5 * len(budgets), 3.8), squeeze=False, sharey=True)
    for ax, U in zip(axes[0], budgets, strict=True):
        for objective in sorted({r["objective"] for r in rows}):
            pts = sorted((r["epochs"], r["final_val_loss"]) for r in rows if r["unique_tokens"] == U
                         and r["objective"] == objective)  # fmt: skip
            if pts:
                ax.plot(*zip(*pts, strict=True), "o-", color=COLORS.get(objective), label=objective.upper())
        level = next((r["unigram"] for r in rows if r["unique_tokens"] == U and "unigram" in r), None)
        if level is not None:  # each budget's own validation split and tokenizer
            ax.axhline(level, color="gray", ls=":", label="unigram CE")
        ax.set_xscale("log")
        ax.set_xlabel("epochs (one run and schedule each)")
        ax.set_title(f"U = {U:,} unique tokens")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("final validation loss (nats/token)")
    axes[0][0].legend()
    return save_figure(fig, out, "loss_vs_epochs")


def figure_loss_vs_flops(rows: list[dict], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for objective in sorted({r["objective"] for r in rows}):
        pts = sorted((r["flops"], r["final_val_loss"], r["unique_tokens"]) for r in rows if r["objective"] == objective)
        budgets = sorted({p[2] for p in pts})
        for U in budgets:
            xs = [(f, v) for f, v, u in pts if u == U]
            alpha = 0.4 + 0.6 * (U == budgets[-1])
            ax.plot(
                *zip(*xs, strict=True),
                "o-",
                color=COLORS.get(objective),
                alpha=alpha,
                label=f"{objective.upper()} U={U:,}",
            )
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel("final validation loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, out, "loss_vs_flops")


def figure_fit(rows: list[dict], fits: dict[str, Any], out: Path) -> Path:
    """Fitted vs observed final loss, and D'/U_D vs repetitions per objective."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    lo, hi = math.inf, -math.inf
    for objective, fit in fits.items():
        if fit is None:
            continue
        obs, pred = [], []
        for r in (r for r in rows if r["objective"] == objective):
            try:  # a point that needs an unidentified parameter (e.g. R_D* for repeated data) has no prediction
                pred.append(float(fit.loss(r["non_embedding_params"], r["tokens_seen"], r["unique_tokens"])))
            except ValueError:
                continue
            obs.append(r["final_val_loss"])
        if not obs:
            continue
        lo, hi = min(lo, *obs, *pred), max(hi, *obs, *pred)
        ax1.scatter(obs, pred, color=COLORS.get(objective), label=objective.upper(), s=18)
        if "rd_star" in fit.values:
            R = np.logspace(-1, 3.5, 200)
            r_star = fit.values["rd_star"]
            ax2.plot(R, 1 + r_star * (1 - np.exp(-R / r_star)), color=COLORS.get(objective),
                     label=f"{objective.upper()} R_D* = {r_star:.3g}")  # fmt: skip
    if lo < hi:
        ax1.plot([lo, hi], [lo, hi], "k:", lw=1)
    ax1.set_xlabel("observed final loss")
    ax1.set_ylabel("fitted loss")
    ax1.set_title("fit vs observation (points the fit can predict)")
    if ax1.get_legend_handles_labels()[0]:
        ax1.legend()
    R = np.logspace(-1, 3.5, 200)
    ax2.plot(R, 1 + R, "k:", lw=1, label="fresh data (D' = D)")
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("repetitions R_D = epochs − 1")
    ax2.set_ylabel("effective data D' / U_D")
    ax2.set_title("what repeated data is worth")
    ax2.legend(fontsize=8)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    return save_figure(fig, out, "fit")
