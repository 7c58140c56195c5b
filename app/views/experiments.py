"""Experiments: every report under reports/ (attnviz experiment run ...), ours beside the papers' figures.

Thin by design: read report.json, draw its tables, plots and curves; the reading paragraph comes from
``attnviz.experiments.readings.reading_for`` (generated from the report's numbers).
"""

from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from attnviz.experiments import list_reports
from attnviz.experiments.readings import reading_for

st.title("Experiments")
st.markdown(
    "The papers report single numbers. Here their comparisons are re-run with several seeds and written "
    "as reports: each table of ours sits beside the paper's, and every number was produced by the command "
    "shown under *How this was made*. Run your own with `attnviz experiment run NAME --budget small`."
)


def _cell(value):
    if value is None:
        return ""
    return value


def _frame(columns: list[str], rows: list[list]) -> list[dict]:
    """Rows as records; a column that mixes text and numbers becomes text (Arrow needs one type)."""
    mixed = set()
    for index, _ in enumerate(columns):
        kinds = {type(row[index]).__name__ for row in rows if index < len(row) and row[index] is not None}
        if "str" in kinds and len(kinds) > 1:
            mixed.add(index)
    records = []
    for row in rows:
        record = {}
        for index, column in enumerate(columns):
            value = row[index] if index < len(row) else None
            # a number column keeps None (Arrow's null); "" there would make Arrow reject the column
            record[column] = str(_cell(value)) if index in mixed else value
        records.append(record)
    return records


def _series_figure(series: dict) -> go.Figure:
    figure = go.Figure()
    for line in series.get("lines", []):
        figure.add_trace(go.Scatter(x=line.get("x"), y=line.get("y"), mode="lines+markers", name=line.get("label")))
    figure.update_layout(height=380, margin={"l": 10, "r": 10, "t": 40, "b": 10}, title=series.get("title"),
                         xaxis_title=series.get("x_label"), yaxis_title=series.get("y_label"))
    return figure


def _render(report: dict, key: str) -> None:
    meta = report.get("metadata", {})
    st.markdown(report.get("question", ""))
    st.markdown(f"**Reading.** {reading_for(report)}")
    for note in report.get("notes", []):
        st.caption(f"Note: {note}")
    commit = (meta.get("commit") or "unknown")[:10] + (" + local changes" if meta.get("dirty") else "")
    st.caption(f"Budget **{meta.get('budget')}** · {meta.get('device')} · commit {commit} · "
               f"{meta.get('wall_time_s', 0):.0f} s wall time ({meta.get('compute_time_s', 0):.0f} s of unit compute) · "
               f"finished {meta.get('finished', '?')}")
    with st.expander("How this was made"):
        st.code(meta.get("command", ""), language="bash")
        st.json({k: meta.get(k) for k in ("budget_detail", "seeds", "device", "commit", "dirty", "versions",
                                          "units", "units_reused", "host")}, expanded=False)

    for table in report.get("tables", []):
        st.subheader(table.get("title", ""))
        paper = table.get("paper")
        if paper:
            ours, theirs = st.columns([3, 2])
        else:
            ours, theirs = st.container(), None
        with ours:
            st.markdown("**Ours**" if paper else "")
            st.dataframe(_frame(table.get("columns", []), table.get("rows", [])), hide_index=True)
            if table.get("caption"):
                st.caption(table["caption"])
        if theirs is not None:
            with theirs:
                st.markdown(f"**The paper** — {paper.get('source', '')}")
                st.dataframe(_frame(paper.get("columns", []), paper.get("rows", [])), hide_index=True)
                st.caption(paper.get("title", ""))

    folder = Path(report.get("_dir", "."))
    for plot in report.get("plots", []):
        path = folder / str(plot.get("file", ""))
        if path.is_file() and path.parent == folder:
            st.image(str(path), caption=f"{plot.get('title', '')}. {plot.get('caption', '')}")
        else:
            st.warning(f"The plot {plot.get('file')} is missing next to this report; rerun the study to redraw it.")

    series = [s for s in report.get("series", []) if s.get("lines")]
    if series:
        with st.expander("Interactive curves"):
            titles = [s.get("title", s.get("id", "")) for s in series]
            chosen = st.selectbox("Curves", range(len(series)), format_func=lambda i: titles[i], key=f"series_{key}")
            st.plotly_chart(_series_figure(series[chosen]), key=f"chart_{key}")


reports = list_reports()
if not reports:
    st.info("No reports found under reports/ (or $ATTNVIZ_REPORTS). Write one with "
            "`attnviz experiment run activations --budget small` and reload this page.")
    st.stop()

tabs = st.tabs([report.get("title", report.get("study", "?")) for report in reports])
for index, (tab, report) in enumerate(zip(tabs, reports, strict=True)):
    with tab:
        _render(report, f"{report.get('study')}_{index}")
