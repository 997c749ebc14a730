"""The polling benchmark's baseline: one Flask route answering a constant JSON document, served by
waitress exactly as `trainhost web` serves the status app (the same waitress options).

    python -m bench.const_app --port P [--body FILE]

With --body, the route answers that file's JSON (a snapshot of a real /training/status response, so
both servers send the same bytes); without, a small constant document.
"""

from __future__ import annotations

import argparse
import json

from flask import Flask, jsonify


def create_app(body: dict) -> Flask:
    app = Flask(__name__)

    @app.get("/const")
    def const():
        return jsonify(body)

    return app


def main() -> None:
    import waitress

    from trainhost.config import load_settings
    from trainhost.status_api.serving import waitress_options

    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body", default=None)
    args = parser.parse_args()
    body = json.loads(open(args.body).read()) if args.body else {"status": "ok", "service": "constant"}
    waitress.serve(create_app(body), host=args.host, port=args.port, **waitress_options(load_settings()))


if __name__ == "__main__":
    main()
