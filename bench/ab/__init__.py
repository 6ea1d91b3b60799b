"""`inferbench ab`: two source trees measured in interleaved rounds, each side by an agent that
runs its own code, the rounds judged as they come (paired, sequential), with calibration and
instruction counts."""
