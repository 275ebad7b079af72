"""buildllm.data: the corpus loader's good and bad cases, served from a local HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from buildllm import data

BODY = b"First Citizen:\nBefore we proceed any further, hear me speak.\n" * 50
BODY_SHA = hashlib.sha256(BODY).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    mode = "ok"

    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.mode == "ok":
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)
        elif self.mode == "partial":  # promise the whole file, send half, hang up
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY[: len(BODY) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)
        else:
            self.send_error(404)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}/input.txt"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture()
def isolated(monkeypatch, tmp_path):
    """No data-dir override, and a private cache directory."""
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv(data.CACHE_DIR_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_corpus_is_tiny_shakespeare(corpus):
    assert len(corpus.encode("utf-8")) == 1_115_394
    assert corpus.startswith("First Citizen:")
    assert data.sha256_of(data.corpus_path()) == data.SHA256


def test_download_verifies_and_caches(server, isolated):
    httpd, url = server
    _Handler.mode = "ok"
    path = data.corpus_path(url=url, sha256=BODY_SHA)
    assert path == isolated / data.FILENAME
    assert path.read_bytes() == BODY
    _Handler.mode = "missing"  # a second call reads the cache, never the network
    assert data.corpus_path(url=url, sha256=BODY_SHA).read_bytes() == BODY


def test_wrong_hash_download_is_rejected_and_not_kept(server, isolated):
    _, url = server
    _Handler.mode = "ok"
    with pytest.raises(data.CorpusError, match="expected sha256"):
        data.corpus_path(url=url, sha256="0" * 64)
    assert not any(isolated.iterdir())


def test_partial_download_leaves_nothing_behind(server, isolated):
    _, url = server
    _Handler.mode = "partial"
    with pytest.raises(data.CorpusError, match="Could not download"):
        data.corpus_path(url=url, sha256=BODY_SHA)
    assert list(isolated.iterdir()) == []


def test_offline_without_copy_says_where_to_put_the_file(isolated):
    # Port 9 on loopback: nothing listens, the connection is refused at once, as offline.
    with pytest.raises(data.CorpusError) as e:
        data.corpus_path(url="http://127.0.0.1:9/input.txt", sha256=BODY_SHA)
    msg = str(e.value)
    assert "offline" in msg and str(isolated / data.FILENAME) in msg and data.DATA_DIR_ENV in msg


def test_corrupt_cached_file_is_rejected(isolated):
    isolated.mkdir(parents=True)
    (isolated / data.FILENAME).write_bytes(BODY + b"tampered")
    with pytest.raises(data.CorpusError, match="corrupt.*delete it and buildllm downloads it"):
        data.corpus_path(sha256=BODY_SHA)


def test_data_dir_override(monkeypatch, tmp_path):
    (tmp_path / data.FILENAME).write_bytes(BODY)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
    assert data.corpus_path(sha256=BODY_SHA) == tmp_path / data.FILENAME
    with pytest.raises(data.CorpusError, match=f"corrupt.*or unset {data.DATA_DIR_ENV}"):
        data.corpus_path(sha256="f" * 64)  # (a mirror there is not downloaded again)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(data.CorpusError, match="does not exist"):
        data.corpus_path()


def test_train_val_split_is_contiguous_90_10():
    seq = list(range(1000))
    train, val = data.train_val_split(seq)
    assert train == seq[:900] and val == seq[900:]
    with pytest.raises(ValueError, match="between 0 and 1"):
        data.train_val_split(seq, 1.0)


def test_reproducible_fixes_seeds_and_threads():
    import random

    import numpy as np
    import torch

    from buildllm.repro import reproducible

    reproducible(seed=7, threads=1)
    a, b, c = torch.randn(3), np.random.rand(), random.random()
    g = reproducible(seed=7, threads=1)
    assert torch.equal(a, torch.randn(3)) and np.random.rand() == b and random.random() == c
    assert torch.are_deterministic_algorithms_enabled()
    assert "0.1235" in str(torch.tensor([0.123456]))  # 4 digits
    assert torch.get_num_threads() == 1
    fresh = torch.Generator().manual_seed(7)
    assert torch.equal(torch.randn(2, generator=g), torch.randn(2, generator=fresh))
    with pytest.raises(ValueError, match="threads"):
        reproducible(threads=0)


def test_data_files_are_not_committed():
    root = Path(__file__).resolve().parent.parent
    assert not list(root.glob("**/tinyshakespeare*.txt")) or all(
        ".venv" in p.parts or "_build" in p.parts for p in root.glob("**/tinyshakespeare*.txt")
    )
