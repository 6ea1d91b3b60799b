"""The history of runs: a database (SQLite by default, PostgreSQL for a team) of every run's
cells keyed by machine, settings and commit, its change-point detection, its page and exports."""
