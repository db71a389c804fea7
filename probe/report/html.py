"""HTML for every page probe writes: escaping, the stylesheet, the page shell, the inlined Vega
bundle, chart specs as one JSON block, and writing a page atomically.

Every page opens offline: the Vega, Vega-Lite and vega-embed bundle shipped by vl-convert is
inlined and every string taken from a result is HTML-escaped.
"""
from __future__ import annotations

import functools
import html
import json
import re
from pathlib import Path

import altair as alt
import numpy as np

from probe import verdict as verdicts
from probe.io import atomic_write_text

# Outcome -> (text colour, background) of the verdict badges and callouts.
BADGES = {
    verdicts.HELD: ("#1a7f37", "#dafbe1"),
    verdicts.PARTLY: ("#9a6700", "#fff8c5"),
    verdicts.NOT_HELD: ("#cf222e", "#ffebe9"),
    verdicts.UNDECIDED: ("#59636e", "#eff2f5"),
    verdicts.NOT_JUDGED: ("#0969da", "#ddf4ff"),
}


def badge(outcome: str) -> str:
    fg, bg = BADGES.get(outcome, BADGES[verdicts.UNDECIDED])
    return f'<span class="badge" style="color:{fg};background:{bg};border-color:{fg}">{escape(outcome)}</span>'


CSS = """
:root { --fg:#1f2328; --muted:#59636e; --border:#d1d9e0; --accent:#0969da; --panel:#fff; --bg:#f6f8fa; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
  font:15px/1.5 system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif; }
main { max-width:1480px; margin:0 auto; padding:28px 32px 48px; }
h1 { font-size:1.7em; margin:0 0 4px; line-height:1.25; }
h2 { font-size:1.2em; margin:32px 0 8px; padding-bottom:4px; border-bottom:1px solid var(--border); }
code { font:0.9em ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; background:#eff2f5; padding:1px 4px; border-radius:4px; }
.meta { color:var(--muted); margin:0 0 12px; }
.claim { margin:2px 0 8px; max-width:960px; font-size:1.05em; }
.takeaway { font-size:1.05em; max-width:960px; border-left:4px solid var(--accent); padding:4px 0 4px 12px; margin:12px 0; }
.callout { background:var(--panel); border:1px solid var(--border); border-radius:8px; padding:10px 14px; margin:12px 0; max-width:960px; }
.callout p { margin:4px 0; }
.callout ul { margin:4px 0 2px; padding-left:20px; color:var(--muted); font-size:0.92em; }
.callout.warn { background:#fff8c5; border-color:#d4a72c; }
.callout.bad { background:#ffebe9; border-color:#ff8182; }
.callout.paper { background:#ddf4ff; border-color:#54aeff; }
table { border-collapse:collapse; font-variant-numeric:tabular-nums; }
th, td { padding:4px 12px; border-bottom:1px solid var(--border); text-align:left; vertical-align:top; }
.meta-table { background:var(--panel); border:1px solid var(--border); border-radius:8px; margin:12px 0; font-size:0.93em; }
.meta-table th { color:var(--muted); font-weight:500; white-space:nowrap; }
table.data { background:var(--panel); border:1px solid var(--border); font-size:0.9em; }
table.data thead th { background:#eff2f5; position:sticky; top:0; }
table.data tbody tr:hover { background:#f6f8fa; }
td.num { text-align:right; white-space:nowrap; }
.table-wrap { overflow-x:auto; }
details { margin:8px 0; } summary { cursor:pointer; color:var(--accent); }
pre { background:var(--panel); border:1px solid var(--border); border-radius:8px; padding:10px; overflow:auto; max-height:360px; font-size:0.85em; }
.grid { display:grid; grid-template-columns:repeat(auto-fill,minmax(min(480px,100%),1fr)); gap:18px; }
/* No width on .vega-embed: vega-embed sizes its box to the chart and keeps 38 px on the right for
   the actions menu; a box stretched to the figure's width let a wide chart run under the menu. */
figure { margin:0; background:var(--panel); border:1px solid var(--border); border-radius:8px; padding:14px 14px 8px; overflow-x:auto; }
figure.empty { color:var(--muted); }
figcaption { color:var(--muted); font-size:0.85em; margin-top:4px; }
.hint { color:var(--muted); font-size:0.92em; max-width:960px; }
footer { color:var(--muted); font-size:0.85em; margin-top:40px; }
/* A phone (375 px): nothing wider than the screen but a chart, which scrolls inside its card. */
@media (max-width: 640px) {
  main { padding:16px 12px 32px; }
  h1 { font-size:1.35em; }
  th, td { padding:4px 8px; }
  .meta-table th, .meta-table td { white-space:normal; overflow-wrap:anywhere; }
  figure { padding:10px 8px 6px; }
  /* A table of a few wide text columns (the index, the robustness table) becomes one card per row. */
  table.stack thead { display:none; }
  table.stack, table.stack tbody, table.stack tr, table.stack td { display:block; }
  table.stack tr { border-bottom:1px solid var(--border); padding:6px 0; }
  table.stack td { border:none; padding:3px 10px; }
  table.stack td[data-label]::before { content:attr(data-label) " "; color:var(--muted); font-size:0.85em; }
}
"""


# The charts' look, as CSS is the page's: vega-embed's config for every chart.
VEGA_CONFIG = {
    "font": "system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif",
    "view": {"stroke": None},
    # labelOverlap + labelSeparation: tick labels that would touch ("5.45.6") are thinned out.
    "axis": {"gridColor": "#eaeef2", "domainColor": "#8c959f", "tickColor": "#8c959f",
             "labelColor": "#424a53", "titleColor": "#1f2328", "titleFontWeight": 500,
             "labelOverlap": True, "labelSeparation": 6, "labelFlush": False},
    "legend": {"orient": "bottom", "direction": "horizontal", "columns": 3,
               "labelLimit": 220, "symbolSize": 90, "titleFontWeight": 500},
    "title": {"anchor": "start", "fontSize": 14, "fontWeight": 600, "subtitleColor": "#59636e",
              "subtitleFontSize": 11, "offset": 8},
}


# The chart specs (one JSON block) and the script that draws each into its <div class="chart">.
EMBED = """<script type="application/json" id="probe-charts">{payload}</script>
<script>
(function () {{
  var payload = JSON.parse(document.getElementById("probe-charts").textContent);
  var options = {{mode: "vega-lite", renderer: "svg", config: payload.config,
    actions: {{export: true, source: false, compiled: false, editor: false}}}};
  payload.charts.forEach(function (item) {{
    var spec = Object.assign({{}}, item.spec, {{datasets: {{}}}});
    item.datasets.forEach(function (name) {{ spec.datasets[name] = payload.datasets[name]; }});
    vegaEmbed("#" + item.id, spec, options).catch(function (err) {{
      document.getElementById(item.id).textContent = "This chart could not be drawn: " + err;
    }});
  }});
}})();
</script>"""


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
<script>
{bundle}
</script>
</head>
<body>
<main>
{body}
<footer>{footer}</footer>
</main>
""" + EMBED + """
</body>
</html>
"""


@functools.lru_cache(maxsize=1)
def vega_bundle() -> str:
    import vl_convert
    from altair.utils._importers import vl_version_for_vl_convert

    bundle = vl_convert.javascript_bundle(vl_version=vl_version_for_vl_convert())
    # A literal "</script" would end the inline script early; vl-convert's bundle has none today.
    return re.sub(r"</(script)", r"<\\/\1", bundle, flags=re.IGNORECASE)


def script_json(payload: object) -> str:
    """JSON that is safe inside <script>: no '<', '>' or '&' can close the element."""
    text = json.dumps(payload, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text


def chart_scripts(payload: object) -> str:
    """The Vega bundle, the chart specs and the drawing script, for a page with a shell of its own
    (`PAGE` holds the same three)."""
    return f"<script>\n{vega_bundle()}\n</script>\n" + EMBED.format(payload=script_json(payload))


class Charts:
    """Collects chart specs; datasets shared by several charts are stored once."""

    def __init__(self) -> None:
        self.items: list[dict] = []
        self.datasets: dict[str, object] = {}

    def add(self, chart: alt.TopLevelMixin, caption: str = "") -> str:
        spec = chart.to_dict()
        datasets = spec.pop("datasets", {})
        self.datasets.update(datasets)
        chart_id = f"chart-{len(self.items)}"
        self.items.append({"id": chart_id, "spec": spec, "datasets": sorted(datasets)})
        caption_html = f"<figcaption>{caption}</figcaption>" if caption else ""
        return f'<figure><div class="chart" id="{chart_id}"></div>{caption_html}</figure>'


def escape(value: object) -> str:
    return html.escape(str(value), quote=True)


def human_duration(seconds: object) -> str:
    try:
        seconds = float(seconds)
    except (TypeError, ValueError):
        return "—"
    if not np.isfinite(seconds):
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h {minutes:02d} min"
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def seed_text(seeds: str) -> str:
    """ "0,1,2,...,19" -> "0–19" when the seeds are consecutive integers; otherwise as given."""
    try:
        values = [int(v) for v in seeds.split(",")]
    except ValueError:
        return seeds
    if len(values) > 3 and values == list(range(values[0], values[0] + len(values))):
        return f"{values[0]}–{values[-1]}"
    return seeds


def file_name(text: object, default: str) -> str:
    """`text` as a safe file-name stem (letters, digits, '.', '_', '-'), or `default` if nothing is left."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip(".-") or default


def write_page(path: Path, text: str) -> Path:
    """Write an HTML page atomically (probe.io): no reader ever sees half a page."""
    return atomic_write_text(path, text)
