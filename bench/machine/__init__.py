"""The machine a run measured: its environment (`env.json`), what its CPU can compute per
engine and precision, which hosts measured a run, and its measured ceilings (peak)."""
