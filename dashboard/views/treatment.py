"""Treatment: the warfarin dose suggestion with its interval and factors, and the glucose forecast for CGM patients."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from medmeta.dashboard import data
from medmeta.dashboard.context import Context
from medmeta.dashboard.review import review

HYPO, HYPER = 70.0, 180.0  # mg/dL alert thresholds


def render(ctx: Context) -> None:
    st.header("Treatment")
    if ctx.patient is None:
        st.info("No patients in the source.")
        return
    st.caption(f"Patient {ctx.patient}")
    warfarin(ctx)
    st.divider()
    glucose(ctx)


def warfarin(ctx: Context) -> None:
    from medmeta.scoring.warfarin import applies

    st.subheader("Warfarin dose")
    rows = data.iwpc_rows(ctx.tables, ctx.key)
    row = rows.loc[[ctx.patient]].reset_index(drop=True)
    if not applies(row).iloc[0]:
        st.info("No warfarin indication, CYP2C9/VKORC1 genotype or warfarin record for this patient.")
        return
    folder = ctx.settings.model_folder("warfarin")
    model = data.warfarin_model(str(folder))
    s = model.suggest(row).iloc[0]
    dose, pgx = float(s.dose_mg_week), float(s.iwpc_pharmacogenetic_mg_week)
    a, b, c, d = st.columns(4)
    a.metric("Suggested starting dose", f"{dose:.1f} mg/week", help=f"about {s.dose_mg_day:.2f} mg/day")
    b.metric("80% prediction interval", f"{s.interval80_low_mg_week:.1f}–{s.interval80_high_mg_week:.1f}")
    c.metric("90% prediction interval", f"{s.interval90_low_mg_week:.1f}–{s.interval90_high_mg_week:.1f}")
    d.metric("IWPC pharmacogenetic algorithm", f"{pgx:.1f} mg/week", delta=f"{dose - pgx:+.1f} vs medmeta",
             delta_color="off")
    r = row.iloc[0]
    genotype = (f"CYP2C9 {r['cyp2c9'] if pd.notna(r['cyp2c9']) else 'unknown'} · VKORC1 -1639 "
                f"{r['vkorc1_1639'] if pd.notna(r['vkorc1_1639']) else 'unknown'} ({s.vkorc1_1639_source})")
    st.write(genotype)
    if pd.notna(r["dose_mg_week"]):
        st.write(f"Recorded stable dose: {float(r['dose_mg_week']):.1f} mg/week")
    factors = pd.DataFrame(s.top_factors)
    if len(factors):
        factors["label"] = factors["factor"] + ": " + factors["value"]
        chart = alt.Chart(factors).mark_bar().encode(
            x=alt.X("effect_mg_week:Q", title="effect on the dose (mg/week)"),
            y=alt.Y("label:N", sort="-x", title=None, axis=alt.Axis(labelLimit=260)),
            color=alt.condition("datum.effect_mg_week > 0", alt.value("#4c78a8"), alt.value("#e45756")),
            tooltip=["factor", "value", "effect_mg_week"])
        st.altair_chart(chart.properties(title="What moved the dose", height=alt.Step(28)), width="stretch")
    if s.missing_inputs:
        st.warning(f"Missing inputs (less reliable suggestion): {', '.join(s.missing_inputs)}")
    fused(ctx, row)
    st.caption(s.disclaimer)
    suggestion = {"dose_mg_week": dose, "interval80": [float(s.interval80_low_mg_week),
                                                       float(s.interval80_high_mg_week)],
                  "iwpc_pharmacogenetic_mg_week": pgx, "factors": s.top_factors}
    review(ctx.audit, user=ctx.user, patient=ctx.patient, kind="warfarin", model="warfarin-dose",
           version=data.model_version("warfarin-dose", str(folder)), suggestion=suggestion)


def fused(ctx: Context, row: pd.DataFrame) -> None:
    """The fusion model's dose beside it: which modalities (clinical record, genotype) it used, and their weights."""
    from medmeta.fusion.datasets import warfarin_data
    from medmeta.fusion.inference import predict_multimodal

    folder = ctx.settings.model_folder("warfarin_fusion")
    if not (folder / "config.json").exists():
        return
    predictions, rejected = predict_multimodal(data.fusion_model(str(folder)), warfarin_data(row).x)
    if not predictions:
        st.write(f"Fusion model: no dose ({rejected[0].reason}).")
        return
    p = predictions[0]
    used = " + ".join(f"{m} (weight {p.modality_weights[m]:.2f})" for m in p.modalities_used)
    interval = ("80% interval {:.1f}–{:.1f}".format(*p.intervals["80%"]) if "80%" in p.intervals
                else "no calibrated interval for this set of modalities")
    missing = f"; missing: {', '.join(p.modalities_missing)}" if p.modalities_missing else ""
    role = ("second opinion" if "genotype" in p.modalities_used else
            "the batch job's proposal for patients without a genotype, where it was measured better")
    st.write(f"Fusion model, {role}: {float(p.prediction):.1f} mg/week ({interval}); used: {used}{missing}. "
             "See docs/fusion.md for how the two models compare.")


@st.cache_data(show_spinner="Adapting the glucose model to this patient...")
def _glucose(_series, patient: str, folder: str):
    from medmeta.treatment.glucose import adaptation_curve

    model = data.glucose_model(folder)
    return model.forecast_latest(_series, adapt_hours=24), adaptation_curve(model, _series)


def glucose(ctx: Context) -> None:
    st.subheader("Glucose forecast (CGM)")
    series = data.cgm(ctx.tables, ctx.key).get(ctx.patient)
    if series is None:
        st.info("No CGM readings for this patient.")
        return
    folder = ctx.settings.model_folder("glucose")
    forecast, curve = _glucose(series, ctx.patient, str(folder))
    if forecast is None:
        st.warning("The last hour of CGM readings is incomplete: no forecast.")
        return
    last = pd.Timestamp(forecast.origin)
    recent = pd.DataFrame({"time": series.time, "glucose": series.glucose})
    recent = recent[recent["time"] >= last - pd.Timedelta(hours=24)]
    ahead = pd.DataFrame({"time": [last + pd.Timedelta(minutes=h) for h in forecast.horizons],
                          "glucose": forecast.glucose, "low": forecast.low, "high": forecast.high})
    alerts = ahead[(ahead["glucose"] < HYPO) | (ahead["glucose"] > HYPER)]
    base = alt.Chart(recent).mark_line(color="#4c78a8").encode(
        x=alt.X("time:T", title=None), y=alt.Y("glucose:Q", title="glucose (mg/dL)", scale=alt.Scale(zero=False)))
    band = alt.Chart(ahead).mark_area(opacity=0.25, color="#f58518").encode(x="time:T", y="low:Q", y2="high:Q")
    line = alt.Chart(ahead).mark_line(color="#f58518", strokeDash=[4, 2]).encode(x="time:T", y="glucose:Q")
    rules = alt.Chart(pd.DataFrame({"y": [HYPO, HYPER]})).mark_rule(color="#e45756", strokeDash=[2, 2]).encode(y="y")
    marks = alt.Chart(alerts).mark_point(color="#e45756", size=80, filled=True).encode(x="time:T", y="glucose:Q")
    st.altair_chart((base + band + line + rules + marks).properties(
        title="Last 24 h and the personalised forecast (band: this patient's errors on those hours)", height=300),
        width="stretch")
    j30, j60 = forecast.horizons.index(30), forecast.horizons.index(60)
    a, b, c = st.columns(3)
    a.metric("In 30 minutes", f"{forecast.glucose[j30]:.0f} mg/dL",
             help=f"band {forecast.low[j30]:.0f}–{forecast.high[j30]:.0f}")
    b.metric("In 60 minutes", f"{forecast.glucose[j60]:.0f} mg/dL",
             help=f"band {forecast.low[j60]:.0f}–{forecast.high[j60]:.0f}")
    c.metric("Adapted on", f"{forecast.adaptation_points} points of the last 24 h")
    if len(alerts):
        low = alerts["glucose"] < HYPO
        kind = "low (< 70 mg/dL)" if low.any() else "high (> 180 mg/dL)"
        minutes = int((alerts["time"].iloc[0] - last).total_seconds() // 60)
        st.error(f"Alert: glucose forecast {kind} in {minutes} minutes. Confirm with a fingerstick.")
    if len(curve) and curve["n"].iloc[0]:
        chart = alt.Chart(curve).mark_line(point=True).encode(
            x=alt.X("hours:Q", title="hours of this patient's readings adapted on"),
            y=alt.Y("mae:Q", title="30-minute forecast MAE (mg/dL)", scale=alt.Scale(zero=False)),
            tooltip=["hours", "mae", "rmse", "n"])
        st.altair_chart(chart.properties(
            title=f"How the error fell as the model adapted (same {int(curve['n'].iloc[0])} later points)",
            height=220), width="stretch")
    st.caption("Glucose forecasts are decision support, not orders: confirm with a fingerstick before acting.")
    suggestion = {"origin": str(last), "glucose_30min": round(float(forecast.glucose[j30]), 1),
                  "glucose_60min": round(float(forecast.glucose[j60]), 1),
                  "band_30min": [round(float(forecast.low[j30]), 1), round(float(forecast.high[j30]), 1)],
                  "alert": bool(len(alerts))}
    review(ctx.audit, user=ctx.user, patient=ctx.patient, kind="glucose", model="glucose-forecast",
           version=data.model_version("glucose-forecast", str(folder)), suggestion=suggestion)
