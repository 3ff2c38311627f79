"""Fixtures for the knowledge tests: a real PDF written byte by byte, a folder of mixed documents, and a real
embeddings server on 127.0.0.1 (stdlib ``http.server`` in a thread) that answers with deterministic vectors."""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


def make_pdf(pages: list[list[str]]) -> bytes:
    """A valid PDF with one page per item, each line of text drawn in Helvetica (xref offsets computed)."""
    objects: list[bytes] = []
    page_ids = [4 + 2 * i for i in range(len(pages))]
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    kids = " ".join(f"{i} 0 R" for i in page_ids)
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for page_id, lines in zip(page_ids, pages, strict=True):
        ops = ["BT", "/F1 12 Tf", "14 TL", "72 720 Td"]
        for line in lines:
            escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops.append(f"({escaped}) Tj T*")
        ops.append("ET")
        stream = "\n".join(ops).encode("latin-1")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {page_id + 1} 0 R "
            "/Resources << /Font << /F1 3 0 R >> >> >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets: list[int] = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


@pytest.fixture
def pdf_maker() -> Callable[[list[list[str]]], bytes]:
    """:func:`make_pdf`, for tests (a test module cannot import this conftest under importlib mode)."""
    return make_pdf


@pytest.fixture
def docs_folder(tmp_path: Path) -> Path:
    """A folder of mixed documents: text, Markdown (nested), HTML, PDF, and a file no reader handles."""
    folder = tmp_path / "docs"
    (folder / "guides").mkdir(parents=True)
    (folder / "notes.txt").write_text(
        "Meeting notes.\n\nThe quarterly budget review moved to Thursday.\n\nBring the sales figures.\n",
        encoding="utf-8",
    )
    (folder / "guides" / "install.md").write_text(
        "# Installation\n\nRun the installer first.\n\n## Linux\n\n"
        "On Debian, install the package with apt and start the daemon.\n\n"
        "```sh\n# not a heading: a comment in a code block\napt-get install widget\n```\n\n"
        "## Windows\n\nDouble-click setup.exe and follow the wizard.\n",
        encoding="utf-8",
    )
    (folder / "faq.html").write_text(
        "<html><head><title>Widget FAQ</title><style>p { color: red }</style></head><body>"
        "<h1>Questions</h1><h2>Refunds</h2><p>Refunds are paid within <b>fourteen</b> days of a return.</p>"
        "<script>var refunds = 'ignored';</script>"
        "<h2>Shipping</h2><p>Parcels ship from Rotterdam.</p></body></html>",
        encoding="utf-8",
    )
    (folder / "report.pdf").write_bytes(
        make_pdf(
            [
                ["Annual report 2026.", "Revenue grew in every region."],
                ["The penguin colony on Bouvet Island doubled.", "Volunteers counted the nests in March."],
            ]
        )
    )
    (folder / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (folder / ".hidden.txt").write_text("secret penguin", encoding="utf-8")
    return folder


EMBED_DIM = 256


def embed_text(text: str) -> list[float]:
    """A deterministic embedding: the 5-letter prefix of each word hashed to one of ``EMBED_DIM`` dimensions.

    Texts that share word stems point the same way, so similarity search behaves like a (crude) real model and
    finds "Bouvetian" near "Bouvet", which keyword search does not."""
    vector = [0.0] * EMBED_DIM
    for word in re.findall(r"\w+", text.lower()):
        vector[int.from_bytes(hashlib.sha256(word[:5].encode()).digest()[:4], "big") % EMBED_DIM] += 1.0
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


class EmbeddingServer:
    """A real OpenAI-compatible ``POST /v1/embeddings`` server on 127.0.0.1, recording every request."""

    def __init__(self) -> None:
        self.requests: list[dict[str, object]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
                if self.path != "/v1/embeddings":
                    self.send_response(404)
                    self.end_headers()
                    return
                texts = body["input"]
                data = [
                    {"object": "embedding", "index": i, "embedding": embed_text(t)}
                    for i, t in enumerate(texts)
                ]
                # Answer out of order: a client must sort by index.
                payload = json.dumps({"object": "list", "model": body["model"], "data": data[::-1]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> EmbeddingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


@pytest.fixture
def embedding_server(allow_model_requests: None) -> Iterator[EmbeddingServer]:
    with EmbeddingServer() as server:
        yield server
