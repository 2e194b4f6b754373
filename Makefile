# The two commands a newcomer needs; both install what is missing first.
.PHONY: dev test bench fuzz build-worker

dev:          ## run the whole system locally with embedded defaults
	bash scripts/dev.sh

test:         ## run every test (installs tools, builds, lints)
	bash scripts/test.sh

bench:        ## gateway vs direct: added latency, TTFB, throughput (not part of test)
	bash scripts/bench.sh

fuzz:         ## every fuzz target for FUZZ_SECONDS (default 300) each (nightly + cargo-fuzz)
	bash scripts/fuzz.sh

build-worker:
	bash scripts/build-worker.sh
