"""buildllm.data: the corpus loader's good and bad cases, served from a local HTTP server; the
corpus as a cached array of token ids; random training windows and fixed evaluation windows."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from buildllm import data, files
from buildllm.tokenizer import CharTokenizer, train_bpe
from shared import TEXT

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
    assert files.sha256_of(data.corpus_path()) == data.SHA256


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


def test_data_files_are_not_committed():
    root = Path(__file__).resolve().parent.parent
    assert not list(root.glob("**/tinyshakespeare*.txt")) or all(
        ".venv" in p.parts or "_build" in p.parts for p in root.glob("**/tinyshakespeare*.txt")
    )


# ---- the corpus as token ids -------------------------------------------------------------------


def test_encode_corpus_is_cached_uint16(private_cache):
    tok = CharTokenizer(TEXT)
    ids = data.encode_corpus(tok, TEXT)
    assert ids.dtype == np.uint16 and ids.shape == (len(TEXT),) and tok.decode(ids.tolist()) == TEXT
    [cached] = (private_cache / "tokens").glob("*.npy")
    assert tok.fingerprint() in cached.name

    class Unusable(CharTokenizer):
        def encode(self, text):
            raise AssertionError("encoded again instead of read from the cache")

    np.testing.assert_array_equal(data.encode_corpus(Unusable(TEXT), TEXT), ids)  # the cache
    data.encode_corpus(CharTokenizer(TEXT + "~"), TEXT)  # another tokenizer: another entry
    data.encode_corpus(tok, TEXT[:-1])  # another text: another entry
    assert len(list((private_cache / "tokens").glob("*.npy"))) == 3
    np.testing.assert_array_equal(data.encode_corpus(tok, TEXT[:50], cache=False), ids[:50])
    assert len(list((private_cache / "tokens").glob("*.npy"))) == 3  # cache=False writes none


def test_encode_corpus_refuses_ids_that_do_not_fit_in_uint16(private_cache):
    big = CharTokenizer("".join(map(chr, range(0x100, 0x100 + 70_000))))
    with pytest.raises(ValueError, match="70000 tokens does not fit in uint16"):
        data.encode_corpus(big, "abc")  # checked before anything is encoded
    assert not (private_cache / "tokens").exists()


def test_a_damaged_token_cache_is_rebuilt(private_cache):
    """A garbled token array in the cache is made again, not reported as the user's mistake."""
    tok = train_bpe(TEXT, 280)
    ids = data.encode_corpus(tok, TEXT)
    [array] = (private_cache / "tokens").iterdir()
    for damage in (b"garbage", b""):
        array.write_bytes(damage)
        np.testing.assert_array_equal(data.encode_corpus(tok, TEXT), ids)
        assert np.load(array).dtype == np.uint16


# ---- windows -------------------------------------------------------------------------------------


def test_get_batch_targets_are_inputs_shifted():
    ids = torch.arange(100)
    x, y = data.get_batch(ids, 8, 4, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 8) and x.dtype == torch.long
    torch.testing.assert_close(x[:, 1:], y[:, :-1])
    torch.testing.assert_close(y - x, torch.ones_like(x))  # consecutive ids: y = x + 1
    # 10 ids, windows of 8 + 1: the only starts are 0 and 1, both drawn, from the generator
    starts = {int(data.get_batch(torch.arange(10), 8, 1, g)[0][0, 0])
              for g in [torch.Generator().manual_seed(s) for s in range(40)]}
    assert starts == {0, 1}
    state = torch.get_rng_state()
    a = data.get_batch(ids, 8, 4, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], data.get_batch(ids, 8, 4, torch.Generator().manual_seed(5))[0])
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is not touched
    x32, _ = data.get_batch(ids.int(), 8, 2)  # int32 ids (as training holds them) come out long
    assert x32.dtype == torch.long


def test_get_batch_too_short_text():
    with pytest.raises(ValueError, match="8 tokens are too few for windows of block_size=8"):
        data.get_batch(torch.arange(8), 8, 2)


def test_eval_windows_score_every_token_once():
    ids = torch.arange(35)
    x, y = data.eval_windows(ids, 8)
    assert x.shape == (4, 8)
    torch.testing.assert_close(y.flatten(), torch.arange(1, 33))
    torch.testing.assert_close(x.flatten(), torch.arange(0, 32))
    x, _ = data.eval_windows(ids, 8, max_windows=2)
    torch.testing.assert_close(x[:, 0], torch.tensor([0, 24]))  # the first and the last
    x, _ = data.eval_windows(ids, 8, max_windows=10)  # more than there are: all of them
    assert x.shape == (4, 8)


def test_eval_windows_needs_at_least_one():
    with pytest.raises(ValueError, match="max_windows must be at least 1"):
        data.eval_windows(torch.arange(100), 8, 0)
    with pytest.raises(ValueError, match="8 tokens are too few for one window of 8"):
        data.eval_windows(torch.arange(8), 8)
