.PHONY: bench

# OFREP load test: PostgreSQL + Redis + uvicorn --workers 2, measured with wrk (see bench/RESULTS.md).
# Detect-to-revert: breaching sample -> worker reverts the flag -> websocket push, with 500 steps
# verified in the background by the served app's own worker (see bench/RESULTS.md).
bench:
	.venv/bin/python bench/ofrep_bench.py
	.venv/bin/python bench/detect_to_revert_bench.py
	.venv/bin/python bench/narration_fanout_bench.py
