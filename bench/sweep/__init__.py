"""A sweep: the cells a profile asks for, planned, checked and run, each in its own worker
process, and the run folder they fill (resume, shards, merge, budgets, executors, shutdown)."""
