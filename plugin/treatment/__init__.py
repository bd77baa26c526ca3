"""Personalised treatment models: meta-learned over patient or population tasks, adapted to a new one.

- :mod:`~medmeta.treatment.iwpc`: the IWPC warfarin dosing algorithms (the clinical baselines);
- :mod:`~medmeta.treatment.warfarin`: the warfarin dose model (genotype + clinical records);
- :mod:`~medmeta.treatment.glucose`: per-subject glucose forecasting from CGM series.

Their outputs are decision support for a clinician, not orders.
"""
