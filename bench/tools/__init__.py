"""Measurement tools beside the product: crosschecks against the engines' own benchmark tools,
gate trials and variance sources, harness overhead and sweep-time benchmarks."""
