"""What a run says: the answer (which engine and precision wins), the summary and the
self-contained HTML report with its charts. Rendering only: the numbers come from the run."""
