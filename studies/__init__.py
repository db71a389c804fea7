"""The studies `probe run-study NAME` runs: one module per paper figure (and probe's own)."""
