"""Whole-file hashes of inputs, and their cache keyed by (path, size, mtime_ns, ctime_ns)."""

import hashlib
import json
import os

from cmrprior.utils.file_hashes import FileHashes


def test_hash_is_the_whole_file_sha256_and_an_edit_in_the_middle_shows(tmp_path):
    f = tmp_path / "mask.nii"
    data = bytearray(os.urandom(300_000))
    f.write_bytes(bytes(data))
    assert FileHashes().file(f) == hashlib.sha256(bytes(data)).hexdigest()
    data[150_000] ^= 1  # one byte in the middle, same size
    f.write_bytes(bytes(data))
    assert FileHashes().file(f) == hashlib.sha256(bytes(data)).hexdigest()


def test_cache_is_used_while_the_stat_matches_and_dropped_when_it_changes(tmp_path):
    f = tmp_path / "img.nii"
    f.write_bytes(b"a" * 1000)
    cache = tmp_path / "run" / "hashes.json"
    first = FileHashes(cache)
    assert first.file(f) == hashlib.sha256(b"a" * 1000).hexdigest()
    first.save()
    # a cache entry with a matching stat is trusted (that is what makes reruns fast): plant a marker value
    stored = json.loads(cache.read_text())
    stored["files"][os.path.abspath(f)]["sha256"] = "planted"
    cache.write_text(json.dumps(stored))
    assert FileHashes(cache).file(f) == "planted"
    # same size, mtime put back as it was: ctime still moves, so the file is read again
    st = os.stat(f)
    f.write_bytes(b"b" * 1000)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert FileHashes(cache).file(f) == hashlib.sha256(b"b" * 1000).hexdigest()


def test_a_damaged_cache_is_ignored_and_a_folder_hash_follows_names_and_contents(tmp_path):
    cache = tmp_path / "hashes.json"
    cache.write_text("{not json")
    series = tmp_path / "series"
    series.mkdir()
    (series / "IM1.dcm").write_bytes(b"one")
    (series / "IM2.dcm").write_bytes(b"two")
    (series / ".DS_Store").write_bytes(b"ignored")
    hashes = FileHashes(cache)
    before = hashes.tree(series)
    (series / ".DS_Store").write_bytes(b"changed")
    assert FileHashes().tree(series) == before
    (series / "IM2.dcm").write_bytes(b"TWO")
    assert FileHashes().tree(series) != before
