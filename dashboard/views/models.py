"""Models: what each model is, how it was evaluated (tables with CIs), and how well calibrated it is."""

from __future__ import annotations

import json
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from medmeta.dashboard import data
from medmeta.dashboard.context import Context


def render(ctx: Context) -> None:
    st.header("Models")
    tabs = st.tabs(["Few-shot diagnosis bundles", "Warfarin dose", "Glucose forecast"])
    with tabs[0]:
        from medmeta.dashboard.views.diagnosis import bundle_cards

        bundle_cards(ctx)
    with tabs[1]:
        folder = ctx.settings.model_folder("warfarin")
        _card(folder, "warfarin-dose")
        calibration = json.loads((folder / "config.json").read_text()).get("calibration_out_of_fold", [])
        if calibration:
            frame = pd.DataFrame(calibration)
            diagonal = alt.Chart(pd.DataFrame({"x": [0, frame["actual_mg_week"].max() * 1.05]})).mark_line(
                color="grey", strokeDash=[3, 3]).encode(x="x:Q", y="x:Q")
            points = alt.Chart(frame).mark_line(point=True).encode(
                x=alt.X("predicted_mg_week:Q", title="predicted dose (mg/week, decile mean)"),
                y=alt.Y("actual_mg_week:Q", title="actual dose (mg/week)"),
                tooltip=list(frame.columns))
            st.altair_chart((diagonal + points).properties(
                title="Calibration: out-of-fold predictions of the training cross-validation", height=320),
                width="stretch")
            st.dataframe(frame, hide_index=True)
    with tabs[2]:
        _card(ctx.settings.model_folder("glucose"), "glucose-forecast")


def _card(folder: Path, name: str) -> None:
    st.caption(f"{name} · {data.model_version(name, str(folder))} · {folder}")
    card = folder / "README.md"
    if card.exists():
        st.markdown(card.read_text())
