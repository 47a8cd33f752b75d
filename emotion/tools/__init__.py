"""tools: per-backend experiments (emotion.tools.harness): bench, parity, the export matrix."""
