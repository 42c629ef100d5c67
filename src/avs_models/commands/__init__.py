"""Sub-commands of the `avs-models` command line (see `avs_models.cli`)."""
