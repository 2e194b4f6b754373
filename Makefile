# The two commands a newcomer needs; both install what is missing first.
.PHONY: dev test bench bench-core fuzz build-worker export

dev:          ## run the whole system locally with embedded defaults
	bash scripts/dev.sh

export:       ## export confirmed conversations from the running `make dev` stack (scripts/export.py)
	@bash -c 'source scripts/env.sh && "$$TB_PYTHON" scripts/export.py'

test:         ## run every test (installs tools, builds, lints)
	bash scripts/test.sh

bench:        ## direct, bare worker, Tollbooth (+ PEERS="tensorzero portkey litellm") side by side
	bash scripts/bench.sh

bench-core:   ## native criterion bench of the core's CPU per request (auth, 100-chunk stream, metering)
	bash -c 'source scripts/env.sh && cargo bench -p tollbooth-core --bench hot_path'

fuzz:         ## every fuzz target for FUZZ_SECONDS (default 300) each (nightly + cargo-fuzz)
	bash scripts/fuzz.sh

build-worker:
	bash scripts/build-worker.sh
