# The two commands a newcomer needs; both install what is missing first.
.PHONY: dev test bench fuzz build-worker export

dev:          ## run the whole system locally with embedded defaults
	bash scripts/dev.sh

export:       ## export confirmed conversations from the running `make dev` stack (scripts/export.py)
	@bash -c 'source scripts/env.sh && "$$TB_PYTHON" scripts/export.py'

test:         ## run every test (installs tools, builds, lints)
	bash scripts/test.sh

bench:        ## gateway vs direct: added latency, TTFB, throughput (not part of test)
	bash scripts/bench.sh

fuzz:         ## every fuzz target for FUZZ_SECONDS (default 300) each (nightly + cargo-fuzz)
	bash scripts/fuzz.sh

build-worker:
	bash scripts/build-worker.sh
