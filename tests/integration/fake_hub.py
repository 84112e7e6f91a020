"""A local HTTP server that answers the Hugging Face Hub's dataset endpoints `huggingface_hub`
uses to fetch files (repo info with its file list; HEAD and GET of /resolve/), serving bytes the
test gives. Real HTTP on 127.0.0.1, asked by the real `huggingface_hub`; only the Hub is stood in
for, since tests never touch the network. A repo can be gated: then it answers 401 GatedRepo unless
the request carries the token."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self, repos: dict[str, dict[str, bytes]], *, gated: dict[str, str] | None = None,
                 listed: dict[str, bytes] | None = None):
        """`repos`: {repo id: {path in the repo: bytes}}; `gated`: {repo id: the token it accepts};
        `listed`: {path: bytes the repo listing describes instead}, a file that changed in transit.
        Parquet files are listed as LFS files (size and sha256), the others by size, as the Hub does."""
        self.repos, self.gated, self.listed, self.requests = repos, gated or {}, listed or {}, []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code: int, body: bytes = b"", headers: dict | None = None) -> None:
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _answer(self) -> None:
                path = unquote(urlparse(self.path).path).strip("/").split("/")
                hub.requests.append((self.command, "/".join(path), self.headers.get("authorization")))
                api = path[:2] == ["api", "datasets"]
                repo = "/".join(path[2:4] if api else path[1:3])
                if repo not in hub.repos:
                    return self._send(404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"})
                if repo in hub.gated and self.headers.get("authorization") != f"Bearer {hub.gated[repo]}":
                    return self._send(401, b'{"error": "gated"}', {"X-Error-Code": "GatedRepo"})
                if api:
                    info = {"id": repo, "sha": COMMIT, "private": False,
                            "siblings": [hub.sibling(f, data) for f, data in hub.repos[repo].items()]}
                    return self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"})
                data = hub.repos[repo].get("/".join(path[5:])) if path[3:4] == ["resolve"] else None
                if data is None:
                    return self._send(404, b"", {"X-Error-Code": "EntryNotFound"})
                return self._send(200, data, {"ETag": f'"{hashlib.sha1(data).hexdigest()}"', "X-Repo-Commit": COMMIT})

            do_GET = do_HEAD = _answer

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def sibling(self, path: str, data: bytes) -> dict:
        data = self.listed.get(path, data)
        entry = {"rfilename": path, "size": len(data), "blobId": hashlib.sha1(data).hexdigest()}
        if path.endswith(".parquet"):
            entry["lfs"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
        return entry

    def __enter__(self) -> FakeHub:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
