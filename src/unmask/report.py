"""Tables, plots and plain-language findings for the demo."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console
from rich.table import Table

NAMES = {"ar": "AR", "mdm": "MDM"}


def findings(results: dict) -> list[str]:
    """What the numbers show, stated without spin (computed, never hard-coded).

    A run's result is its final validation loss: each epoch count is its own run with its own
    schedule. The lowest loss seen mid-run (early stopping) is reported separately.
    """
    runs = results["runs"]
    by = {o: sorted((r for r in runs if r["objective"] == o), key=lambda r: r["epochs"]) for o in ("ar", "mdm")}
    lines = []
    one = {o: next((r for r in rs if r["epochs"] == 1), None) for o, rs in by.items()}
    if one["ar"] and one["mdm"]:
        ar, mdm = one["ar"]["final_val_loss"], one["mdm"]["final_val_loss"]
        lines.append(f"After 1 epoch {'AR' if ar < mdm else 'MDM'} is better: AR {ar:.3f} vs MDM {mdm:.3f}.")
    for o, rs in by.items():
        if len(rs) < 2:
            continue
        best, last = min(rs, key=lambda r: r["final_val_loss"]), rs[-1]
        if best is last:
            lines.append(
                f"{NAMES[o]} is still improving at the largest epoch count ({last['epochs']}): "
                f"{last['final_val_loss']:.3f}."
            )
        else:
            lines.append(
                f"{NAMES[o]} is best at {best['epochs']} epochs ({best['final_val_loss']:.3f}); more repetition "
                f"hurts: {last['epochs']} epochs end at {last['final_val_loss']:.3f}."
            )
        worst = max(rs, key=lambda r: r["last_val_loss"] - r["best_val_loss"])  # both on the curve's estimator
        if worst["last_val_loss"] - worst["best_val_loss"] > 0.05:
            lines.append(
                f"{NAMES[o]} overfits inside a run: the {worst['epochs']}-epoch run bottoms at "
                f"{worst['best_val_loss']:.3f} (epoch {worst['best_epoch']:.0f}) and ends at "
                f"{worst['last_val_loss']:.3f}."
            )
    unigram, b = results.get("unigram"), results["best"]
    if unigram and "mdm" in b:
        lowest = min(r["best_val_loss"] for r in by["mdm"])
        gap = unigram - b["mdm"]["final_val_loss"]
        lines.append(
            f"MDM learns beyond word frequencies: its best run ends {gap:.3f} nats below the unigram "
            f"cross-entropy of the validation split ({unigram:.3f}); lowest point {unigram - lowest:.3f} below."
            if gap > 0.1
            else f"MDM has not left the unigram plateau ({unigram:.3f}): its best run ends at "
            f"{b['mdm']['final_val_loss']:.3f}."
        )
    if "ar" in b and "mdm" in b:
        ar, mdm = b["ar"]["final_val_loss"], b["mdm"]["final_val_loss"]
        verdict = "beats" if mdm < ar else "does not beat"
        lines.append(f"At this scale MDM's best run ({mdm:.3f}) {verdict} AR's best run ({ar:.3f}).")
        lowest_ar = min(r["best_val_loss"] for r in by["ar"])
        if lowest_ar < ar - 0.005:
            lines.append(f"(AR's lowest loss anywhere, {lowest_ar:.3f}, needs early stopping inside a longer run.)")
    lines.append(
        "AR losses are exact NLL/token; MDM losses are ELBOs, upper bounds on its NLL. "
        "Both objectives used identical model, data, optimiser and schedule settings."
    )
    return lines


def demo_summary(results: dict, width: int = 80) -> str:
    """The demo's table and findings as plain text, as the README quotes them."""
    console = Console(file=io.StringIO(), width=width, color_system=None)
    _print_summary(console, results)
    return console.file.getvalue()


def print_demo_report(results: dict, out: Path) -> None:
    console = Console()
    _print_summary(console, results)
    for objective, texts in results.get("samples", {}).items():
        console.print(f"\n[bold]{NAMES[objective]} samples[/bold] (best run, temperature 1):")
        for text in texts:
            console.print("  " + repr(text))
    console.print(f"\nplot: {out / 'loss_vs_epochs.png'}   results: {out / 'results.json'}")
    console.print(
        "The crossover itself needs more epochs and several data budgets: the CPU mini-study "
        "(unmask study run configs/studies/mini.yaml) and its committed report, docs/study/mini/report.md."
    )


def _print_summary(console: Console, results: dict) -> None:
    unigram = results.get("unigram")
    table = Table(
        title="validation loss (nats/token): one run and one schedule per epoch count, same unique tokens"
        + (f"; unigram cross-entropy {unigram:.3f}" if unigram else "")
    )
    columns = ["objective", "epochs", "tokens seen", "final val loss", "below unigram", "lowest val loss", "at epoch"]
    for col in columns:
        table.add_column(col, justify="right")
    for r in results["runs"]:
        table.add_row(
            NAMES[r["objective"]],
            str(r["epochs"]),
            f"{r['tokens_seen']:,}",
            f"{r['final_val_loss']:.3f}",
            f"{unigram - r['final_val_loss']:.3f}" if unigram else "—",
            f"{r['best_val_loss']:.3f}",
            f"{r['best_epoch']:.1f}",
        )
    console.print(table)
    for line in findings(results):
        console.print("• " + line)


def plot_demo(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"ar": "tab:blue", "mdm": "tab:red"}
    fig, (ax_runs, ax_curves) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for o in ("ar", "mdm"):
        rs = sorted((r for r in results["runs"] if r["objective"] == o), key=lambda r: r["epochs"])
        if not rs:
            continue
        epochs = [r["epochs"] for r in rs]
        ax_runs.plot(epochs, [r["final_val_loss"] for r in rs], "o-", color=colors[o], label=f"{NAMES[o]} final")
        ax_runs.plot(
            epochs,
            [r["best_val_loss"] for r in rs],
            "x:",
            color=colors[o],
            alpha=0.6,
            label=f"{NAMES[o]} lowest during the run",
        )
        for r in rs:
            xs, ys = zip(*r["curve"], strict=True)
            ax_curves.plot(
                xs,
                ys,
                color=colors[o],
                alpha=0.35 + 0.6 * (r is rs[-1]),
                lw=1,
                label=f"{NAMES[o]}" if r is rs[-1] else None,
            )
    for ax in (ax_runs, ax_curves):
        if results.get("unigram"):
            ax.axhline(results["unigram"], color="gray", ls=":", lw=1, label="unigram cross-entropy")
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    ax_runs.set(
        xlabel="epochs (one run and schedule each)",
        ylabel="validation loss (nats/token)",
        title="each run's final (and lowest) validation loss",
    )
    ax_curves.set(xlabel="epochs seen", title="validation during each run")
    fig.suptitle("AR (exact NLL) vs MDM (ELBO, an upper bound) on the same unique tokens")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
