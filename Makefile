.PHONY: bench

# OFREP load test: PostgreSQL + Redis + uvicorn --workers 2, measured with wrk (see bench/RESULTS.md).
bench:
	.venv/bin/python bench/ofrep_bench.py
