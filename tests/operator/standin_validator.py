"""Stand-in for ``python -m pot.validator`` (and the settlement sidecar) in operator tests.

Serves the validator HTTP API of docs/protocol.md from memory, stdlib only so
a pod starts in a blink: /healthz, /readyz, /v1/status (this replica, view 0,
primary 0), POST /v1/tasks (202; 400 for a task named ``reject-*``) and GET
/v1/tasks/NS/NAME. Usage: ``python standin_validator.py [PORT]``; ORDINAL
comes from the environment as the real one's --replica-id does.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TASKS: dict[str, dict[str, object]] = {}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *_: object) -> None:
        pass

    def _send(self, code: int, doc: object) -> None:
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path in ("/healthz", "/readyz"):
            self._send(200, "ok")
        elif self.path == "/v1/status":
            ordinal = int(os.environ.get("ORDINAL", "0") or 0)
            self._send(
                200,
                {
                    "replica": ordinal,
                    "n": 4,
                    "f": 1,
                    "view": 0,
                    "primary": 0,
                    "lastCommittedSeq": 3,
                    "stableCheckpoint": 0,
                    "ready": True,
                },
            )
        elif self.path.startswith("/v1/tasks/"):
            task = TASKS.get(self.path[len("/v1/tasks/") :])
            self._send(200 if task else 404, task or {"error": "unknown task"})
        else:
            self._send(404, {"error": "no route"})

    def do_POST(self) -> None:
        doc = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.path != "/v1/tasks":
            self._send(404, {"error": "no route"})
        elif str(doc.get("id", "")).split("/")[-1].startswith("reject-"):
            self._send(400, {"error": "unknown dataset", "field": "spec.dataset"})
        else:
            steps = doc["spec"]["hyperparameters"]["steps"]
            TASKS[doc["id"]] = {
                "id": doc["id"],
                "registered": True,
                "phase": "Training",
                "progress": {"step": 0, "totalSteps": steps},
            }
            self._send(202, {"id": doc["id"], "status": "Registered"})


if __name__ == "__main__":
    # PID 1 of a container ignores SIGTERM unless it handles it (as in real pods).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
