.PHONY: bench soak fuzz faults sdk-soak

# OFREP load test: PostgreSQL + Redis + uvicorn --workers 2, measured with wrk (see bench/RESULTS.md).
# Detect-to-revert: breaching sample -> worker reverts the flag -> websocket push, with 500 steps
# verified in the background by the served app's own worker (see bench/RESULTS.md).
# Verification throughput: evaluations/s of one process over 500 running steps (built-in store).
# SLO overview: render time of /slos/ with 50 SLOs over 28 days of built-in samples (~24 M rows).
bench:
	.venv/bin/python bench/ofrep_bench.py
	.venv/bin/python bench/detect_to_revert_bench.py
	.venv/bin/python bench/narration_fanout_bench.py
	.venv/bin/python bench/verification_throughput_bench.py
	.venv/bin/python bench/slo_overview_bench.py

# The governance state machine (tests/governance) with a soak budget: SOAK_EXAMPLES plans, each
# up to SOAK_STEPS actions, on SQLite and (with DATABASE_URL) PostgreSQL. CI runs a small slice.
SOAK_EXAMPLES ?= 500
SOAK_STEPS ?= 60
soak:
	STEPWISE_SIM_EXAMPLES=$(SOAK_EXAMPLES) STEPWISE_SIM_STEPS=$(SOAK_STEPS) STEPWISE_SIM_TIMEOUT=86400 \
		.venv/bin/python -m pytest tests/governance -s -p no:cacheprovider

# Every JSON endpoint fuzzed with bodies of the right shape (tests/core): FUZZ_EXAMPLES per
# endpoint. CI runs 25.
FUZZ_EXAMPLES ?= 2000
fuzz:
	STEPWISE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) .venv/bin/python -m pytest tests/core -s -p no:cacheprovider -k fuzz

# The fault suite (tests/faults: the served stack under a database outage, kill -9 of the
# worker, hostile requests) with more rounds than CI's 2.
faults:
	STEPWISE_FAULT_KILLS=10 .venv/bin/python -m pytest tests/faults -s -p no:cacheprovider

# The OpenFeature SDK against the served app, over SDK_KEYS targeting keys (CI asks 2,000):
# every answer equals the plain evaluator's, before and after a configuration change.
SDK_KEYS ?= 10000
sdk-soak:
	STEPWISE_SDK_KEYS=$(SDK_KEYS) .venv/bin/python -m pytest tests/rollouts/test_ofrep_client.py -s -p no:cacheprovider
