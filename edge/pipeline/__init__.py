"""The pipeline stages, in order: watch, ingest, decode, preprocess, infer, study, publish."""
