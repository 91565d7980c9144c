"""Reports: MLflow runs -> tables in the seeds' layouts with noise across seeds, plots, README
regions. Never imports torch or harness.train (an import-linter contract)."""
