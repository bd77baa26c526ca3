"""Batch scoring of a whole FHIR source: every patient, every model that applies, results back as FHIR.

The work is split into partitions of patients (Bundle files grouped; Bulk NDJSON shuffled by
patient), each processed by :func:`~medmeta.batch.partition.process_partition` on a Dask
worker and written atomically, so a run killed at any point resumes where it stopped.
"""

from medmeta.batch.run import BatchConfig, run_batch

__all__ = ["BatchConfig", "run_batch"]
