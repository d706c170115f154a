"""The training report as one self-contained HTML page (the curves inline), for QGIS's Results
Viewer and for anyone who opens it: the verdict, the best epoch, the initial model and the
baselines the training measured, every epoch, and what was trained on."""

from __future__ import annotations

import base64
import html
import math
import os

from .. import __version__
from .validation import metrics_text

METRICS = [("mae", "MAE", "{:.5f}"), ("rmse", "RMSE", "{:.5f}"), ("psnr", "PSNR (dB)", "{:.2f}"),
           ("ssim", "SSIM", "{:.4f}"), ("sam", "SAM (°)", "{:.3f}")]
EPOCH_COLUMNS = [("epoch", "{}"), ("train_loss", "{:.5f}"), ("val_mae", "{:.5f}"), ("val_rmse", "{:.5f}"),
                 ("val_psnr", "{:.2f}"), ("val_ssim", "{:.4f}"), ("val_sam", "{:.3f}"), ("seconds", "{:.1f}")]
STYLE = (
    "body{font-family:sans-serif;max-width:60em;margin:1em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:0.5em 0 1.5em}th,td{border:1px solid #bbb;padding:0.25em 0.6em}"
    "th{background:#eee}td.num{text-align:right;font-family:monospace}tr.best td{font-weight:bold;"
    "background:#f6f6f6}td.key{font-weight:bold;white-space:nowrap;vertical-align:top}"
    ".verdict{font-size:1.1em;padding:0.5em 0.8em;background:#f4f8ff;border-left:4px solid #4a7bd0}"
    ".note{color:#555;font-size:0.9em}img{max-width:100%}"
)


def _cell(value, fmt):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "&ndash;"
    try:
        return html.escape(fmt.format(value))
    except (TypeError, ValueError):
        return html.escape(str(value))


def baselines_of(result):
    """``{name: metrics}`` of the baselines the training measured on its validation data, if any."""
    baselines = getattr(result, "baselines", None) or {}
    return {str(name): values for name, values in dict(baselines).items() if isinstance(values, dict)}


def verdict(result):
    """One or two sentences: did training help, and does the model beat the simple baselines?"""
    best, initial = result.best_metrics or {}, result.initial_metrics or {}
    parts = []
    if result.cancelled:
        parts.append(f"Cancelled after {result.epochs} epochs; the model file holds the best epoch so far.")
    if "mae" in best and initial.get("mae"):
        change = 100.0 * (best["mae"] - initial["mae"]) / initial["mae"]
        parts.append(
            f"Best epoch {result.best_epoch}: validation MAE {best['mae']:.5f}, "
            f"{abs(change):.1f} % {'lower' if change < 0 else 'higher'} than the initial model's {initial['mae']:.5f}."
        )
    baselines = baselines_of(result)
    if baselines and "mae" in best:
        # The same sentences as the training log (reports.verdict), not a second wording of them.
        from types import SimpleNamespace

        from .reports import verdict as log_verdict

        state = SimpleNamespace(best_metrics=best, baselines=baselines, best_epoch=result.best_epoch,
                                initial_metrics=initial)
        parts.extend(line for line in log_verdict(state, result.validation_mode) if not line.startswith("No epoch beat"))
    elif not baselines:
        parts.append("The training measured no baselines; compare fused images with Assess Fusion Accuracy.")
    return " ".join(parts + list(getattr(result, "notes", None) or ()))


def _png_data_uri(path):
    if not path or not os.path.isfile(path):
        return None
    with open(path, "rb") as handle:
        return "data:image/png;base64," + base64.b64encode(handle.read()).decode("ascii")


def training_report_html(result, date=""):
    """The page for a :class:`~model_core.training.trainer.TrainResult`."""
    esc = html.escape
    out = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', "<title>CTSTFM training report</title>",
        f"<style>{STYLE}</style>", "</head><body>", "<h1>CTSTFM training report</h1>",
        f'<p class="verdict">{esc(verdict(result))}</p>',
    ]
    image = _png_data_uri(result.report_png)
    if image:
        out.append(f'<p><img alt="training curves: loss and validation metrics per epoch" src="{image}"></p>')
    out += ["<h2>Validation metrics</h2>", "<table>",
            "<tr><th>model</th>" + "".join(f"<th>{esc(label)}</th>" for _, label, _ in METRICS) + "</tr>"]
    rows = [("initial model", result.initial_metrics, "")]
    rows.append((f"best epoch ({result.best_epoch})", result.best_metrics, ' class="best"'))
    rows += [(f"baseline: {name}", values, "") for name, values in baselines_of(result).items()]
    for name, values, css in rows:
        cells = "".join(f'<td class="num">{_cell((values or {}).get(key), fmt)}</td>' for key, _, fmt in METRICS)
        out.append(f"<tr{css}><td>{esc(name)}</td>{cells}</tr>")
    out.append("</table>")
    out += ["<h2>Run</h2>", "<table>"]
    facts = [
        ("Model file", result.model_path),
        ("Epochs", f"{result.epochs} (best {result.best_epoch})"),
        ("Device", result.device),
        ("Time", f"{result.seconds:.0f} s"),
        ("Training dates", ", ".join(str(d) for d in result.train_dates)),
        ("Validation dates", f"{', '.join(str(d) for d in result.validation_dates)} ({result.validation_mode})"),
        ("Epoch table", result.report_csv),
        ("Checkpoint (resume)", result.checkpoint),
    ]
    out += [f'<tr><td class="key">{esc(k)}</td><td>{esc(str(v))}</td></tr>' for k, v in facts]
    out += ["</table>", "<h2>Every epoch</h2>", "<table>",
            "<tr>" + "".join(f"<th>{esc(key)}</th>" for key, _ in EPOCH_COLUMNS) + "</tr>"]
    for row in result.history:
        css = ' class="best"' if row.get("epoch") == result.best_epoch else ""
        out.append(f"<tr{css}>" + "".join(f'<td class="num">{_cell(row.get(k), f)}</td>' for k, f in EPOCH_COLUMNS)
                   + "</tr>")
    out.append("</table>")
    out.append(
        f'<p class="note">Best: {esc(metrics_text(result.best_metrics))}. MAE and RMSE in reflectance; metric '
        f"definitions in docs/metrics.md. Written {esc(date)} by ctstfm_qgis model_core {esc(__version__)}.</p>"
    )
    out.append("</body></html>\n")
    return "\n".join(out)


def write_report_html(result, path):
    """Write :func:`training_report_html` to ``path`` (whole or not at all); returns ``path``."""
    import datetime as _dt

    from ..outputs import atomic_write_text

    date = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    atomic_write_text(str(path), training_report_html(result, date))
    return str(path)
