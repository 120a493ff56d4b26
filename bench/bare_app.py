"""The reference for bench/token_load.py: the least a Flask + waitress JSON endpoint does.

It parses the same JSON body as /auth/token and answers a JSON object of the same shape, with
no database, no encryption and no hooks: the ceiling the gateway's hot path is measured
against. Served exactly as `authgateway serve` serves the gateway (waitress, same threads).

    python bench/bare_app.py --port 8001 --threads 8
"""

from __future__ import annotations

import argparse

from flask import Flask, jsonify, request
from waitress import serve

app = Flask(__name__)

ACCESS_TOKEN = "ya29.a0AfB_" + "x" * 200


@app.post("/auth/token")
def token():
    body = request.get_json(force=True)
    if not isinstance(body, dict) or "user_email" not in body:
        return jsonify(error="invalid_request"), 400
    return jsonify(access_token=ACCESS_TOKEN, token_type="Bearer",
                   expires_at="2030-01-01T00:00:00+00:00", scopes=["openid", "email"])


@app.get("/health")
def health():
    return jsonify(status="healthy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args()
    serve(app, host=args.host, port=args.port, threads=args.threads, ident="bare")


if __name__ == "__main__":
    main()
