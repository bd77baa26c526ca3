"""Multimodal fusion: image, EHR, genotype and time-series inputs of one patient in one model.

- :mod:`~medmeta.fusion.modalities`: :class:`Modality` specs and the :class:`Multimodal` container (data + mask);
- :mod:`~medmeta.fusion.encoders`: one encoder per kind of modality (tabular, genotype, series, image);
- :mod:`~medmeta.fusion.network`: :class:`FusionNet` (encoders, late / gated / attention fusion, head);
- :mod:`~medmeta.fusion.model`: :class:`FusionModel`, the estimator (fit, predict with any subset of modalities,
  intervals per set of modalities, MAML head adaptation, save/load);
- :mod:`~medmeta.fusion.fewshot`: :class:`FusedMetricClassifier` (prototypes / matching over fused embeddings);
- :mod:`~medmeta.fusion.inference`: :func:`predict_patient`, :func:`predict_patients` (for the batch job and dashboard);
- :mod:`~medmeta.fusion.datasets`: real paired data (IWPC warfarin; FHIR diabetes records);
- :mod:`~medmeta.fusion.evaluation`: patient-level cross-validation and bootstrap tables.
"""

from medmeta.fusion.fewshot import FusedMetricClassifier
from medmeta.fusion.inference import FusedPrediction, predict_multimodal, predict_patient, predict_patients
from medmeta.fusion.modalities import Modality, Multimodal, modality_dropout
from medmeta.fusion.model import AdaptedFusionModel, FusionModel
from medmeta.fusion.network import FusionNet

__all__ = ["AdaptedFusionModel", "FusedMetricClassifier", "FusedPrediction", "FusionModel", "FusionNet", "Modality",
           "Multimodal", "modality_dropout", "predict_multimodal", "predict_patient", "predict_patients"]
