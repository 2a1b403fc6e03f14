.PHONY: bench

# OFREP load test: PostgreSQL + Redis + uvicorn --workers 2, measured with wrk (see bench/RESULTS.md).
# Detect-to-revert: breaching sample -> worker reverts the flag -> websocket push, with 500 steps
# verified in the background by the served app's own worker (see bench/RESULTS.md).
# SLO overview: render time of /slos/ with 50 SLOs over 28 days of built-in samples (~24 M rows).
bench:
	.venv/bin/python bench/ofrep_bench.py
	.venv/bin/python bench/detect_to_revert_bench.py
	.venv/bin/python bench/narration_fanout_bench.py
	.venv/bin/python bench/slo_overview_bench.py
