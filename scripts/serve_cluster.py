"""Serve the app from several processes behind nginx with sticky sessions (see attnviz/cluster.py).

    python scripts/serve_cluster.py [--processes 2] [--port 8501] [--base-port 8601]
                                    [--listen 127.0.0.1] [--home DIR]

Open http://HOST:PORT; Ctrl-C (or SIGTERM) stops nginx and every app process. Use ``--listen 0.0.0.0``
for a classroom network. All processes share the shipped checkpoints and one ATTNVIZ_HOME (``--home``),
so their trained models and their training queue are shared.
"""

import argparse
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attnviz.cluster import Cluster  # noqa: E402
from attnviz.errors import AttnvizError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, default=2, help="app processes (about one per 2 cores)")
    parser.add_argument("--port", type=int, default=8501, help="the address users open")
    parser.add_argument("--base-port", type=int, default=8601, help="the first app process's port")
    parser.add_argument("--listen", default="127.0.0.1", help="nginx's listen address (0.0.0.0: every network)")
    parser.add_argument("--home", type=Path, default=None, help="shared ATTNVIZ_HOME (default ~/.attnviz)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per app process (default: the cores divided among the processes)")
    args = parser.parse_args(argv)
    try:
        cluster = Cluster(processes=args.processes, port=args.port, base_port=args.base_port, home=args.home,
                          listen_host=args.listen, threads_per_process=args.threads)
        cluster.start()
    except AttnvizError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"attnviz: {args.processes} app processes behind nginx at {cluster.url} "
          f"(logs in {cluster.state_dir}); Ctrl-C stops them", flush=True)
    def interrupt(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        while all(child.poll() is None for child in cluster.children):
            time.sleep(1.0)
        print("error: an app process or nginx stopped; stopping the rest", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
