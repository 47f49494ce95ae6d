"""Experiments: config schema, runner, sweeps, result store, reports and the ``tinydistill`` CLI."""
