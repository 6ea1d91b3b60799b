"""What is kept on disk: the run folder's format (cell JSON, results.csv, env and config files)
and the artifact and engine caches under their manifests."""
