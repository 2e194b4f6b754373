"""Starts TensorZero's gateway (the one embedded in the PyPI wheel, no databases) with the
config file given as the first argument, prints `LISTENING <url>` and serves until
SIGTERM. Used by `make bench --peers tensorzero`."""
import signal
import sys
import threading

import tensorzero

gateway = tensorzero._start_http_gateway(
    config_file=sys.argv[1],
    clickhouse_url=None,
    postgres_url=None,
    valkey_url=None,
    async_setup=False,
)
print("LISTENING " + gateway.base_url.rstrip("/"), flush=True)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
signal.signal(signal.SIGINT, lambda *_: stop.set())
stop.wait()
gateway.close()
