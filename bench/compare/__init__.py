"""Two runs compared: the statistics and decision rules (core, verdict, sequential looks), the
check that they were measured alike, and the outputs (compare.csv, compare.md, compare.html).
Decisions live in `core`, `verdict` and `sequential`; the other modules only read or render."""
