"""One cell inside its worker: build the model and engine, check accuracy against the FP32
reference, time it (stopping rules, interference, rates) and summarize what was measured."""
