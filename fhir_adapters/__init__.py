"""FHIR adapters: read R4 records into tables and tasks, write results back as valid FHIR."""
