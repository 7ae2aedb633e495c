"""Pictures for the evaluation assets' pages in the UI: the training loss curve, and the paired
differences of a comparison with their intervals."""

from __future__ import annotations

from mathdata_pipeline.common.plots import _markdown_image


def loss_curve(title: str, losses: list[float]) -> str:
    """The training loss per logged step as a markdown image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
    ax.plot(range(1, len(losses) + 1), losses, marker="." if len(losses) < 50 else None)
    ax.set_xlabel("step", fontsize=8)
    ax.set_ylabel("training loss", fontsize=8)
    ax.set_title(title, fontsize=10)
    return _markdown_image(fig, title)


def difference_plot(title: str, rows: list[dict]) -> str:
    """One panel per measure: each comparison's overall difference a - b (a dot) with its 95%
    interval (a bar), coloured by verdict, around a line at 0. `rows`: RESULT_SCHEMA dicts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"better": "#2ca02c", "worse": "#d62728"}
    overall = [r for r in rows if r["scope"] == "all" and r["items"] > 0]
    measures = sorted({r["measure"] for r in overall}) or ["mean_logprob"]
    fig, axes = plt.subplots(1, len(measures), figsize=(4 * len(measures) + 1, 0.5 * max(len(overall), 2) + 1.4))
    axes = axes if len(measures) > 1 else [axes]
    for ax, measure in zip(axes, measures):
        mine = [r for r in overall if r["measure"] == measure]
        for y, r in enumerate(mine):
            error = [[r["difference"] - r["ci_low"]], [r["ci_high"] - r["difference"]]]
            ax.errorbar(r["difference"], y, xerr=error, fmt="o", capsize=4, color=colours.get(r["verdict"], "#555555"))
        ax.axvline(0.0, color="#999999", linewidth=1)
        ax.set_yticks(range(len(mine)), [f"{r['a']} vs {r['b']}\n({r['items']} items)" for r in mine], fontsize=7)
        ax.set_xlabel(f"{measure}: a - b (95% CI)", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _markdown_image(fig, title)
