"""The options of ``tinydistill serve``, apart from the server: building the command line must not import
``http.server`` and friends (8-11 MiB) into every ``tinydistill`` process, ``predict`` included."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``tinydistill serve`` options (experiments/cli.py calls this, so the CLI stays light; it adds
    ``--runtime`` itself, as for every command that runs a model)."""
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port, printed)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads of each model call (default 1)")
    p.add_argument("--workers", type=int, default=1, help="model calls running at the same time (default 1)")
    p.add_argument("--max-batch", type=int, default=32,
                   help="most texts in one model call, merged from concurrent requests (default 32; 1: no batching)")
    p.add_argument("--batch-window-ms", type=float, default=2.0,
                   help="longest wait of a worker for requests being read, to batch them (default 2 ms)")
    p.add_argument("--max-texts", type=int, default=64, help="most texts per request (default 64)")
    p.add_argument("--max-text-chars", type=int, default=512, help="longest text in characters (default 512)")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="largest request body (default 1 MiB)")
    p.add_argument("--max-connections", type=int, default=128, help="open connections at most (default 128)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds a request may wait for the model (504)")
    p.add_argument("--access-log", action="store_true", help="log every request to stderr")
    p.add_argument("--data-dir", metavar="DIR", help="data directory, for tasks whose labels live in data files")
