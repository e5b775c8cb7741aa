"""fora-pipelines: the FoRA fine-tuning job as plain typed steps, a CLI and KFP v2 DAGs."""
