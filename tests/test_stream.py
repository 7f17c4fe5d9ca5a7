"""Streaming webdataset shards: order, keys, skips, resume at a byte offset, retries, and damage that is named."""
import io
import tarfile

import pytest

from asif_nb import stream
from asif_nb.stream import Position, ShardError, hub_webdataset, local_webdataset
from asif_nb.transfer import Limits

FAST = Limits(connect_timeout=5, read_timeout=5, min_rate=1.0, grace=5.0, retries=2, backoff=0.01)


def _samples(make_jpeg, start, n):
    return [{"__key__": f"{i:06d}", "jpg": make_jpeg(i), "txt": f"caption number {i}", "json": "{}"}
            for i in range(start, start + n)]


def _write(tmp_path, make_shard, sizes):
    paths, start = [], 0
    for shard, n in enumerate(sizes):
        path = tmp_path / f"part-{shard:04d}.tar"
        path.write_bytes(make_shard(_samples(_make_jpeg_cache, start, n)))
        paths.append(path)
        start += n
    return paths


_JPEGS = {}


def _make_jpeg_cache(seed):
    return _JPEGS[seed]


@pytest.fixture(autouse=True)
def _jpegs(make_jpeg):
    for seed in range(40):
        _JPEGS.setdefault(seed, make_jpeg(seed))


def test_local_shards_stream_in_order_with_keys_captions_and_positions(tmp_path, make_shard):
    paths = _write(tmp_path, make_shard, [3, 2])
    source = local_webdataset(str(tmp_path / "part-*.tar"))
    samples = list(source.samples(limits=FAST))
    assert [s.key for s in samples] == [f"{i:06d}" for i in range(5)]
    assert [s.caption for s in samples] == [f"caption number {i}" for i in range(5)]
    assert all(s.skip is None and s.image == _JPEGS[i] for i, s in enumerate(samples))
    assert [(s.shard, s.index) for s in samples] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    assert samples[2].after == Position(1) and samples[4].after == Position(2)
    assert samples[0].after.shard == 0 and samples[0].after.sample == 1 and samples[0].after.offset > 0
    assert source.identity["urls"] == [p.resolve().as_uri() for p in paths]


def test_resuming_at_a_recorded_position_gives_the_same_samples(tmp_path, make_shard):
    _write(tmp_path, make_shard, [4, 3])
    source = local_webdataset(str(tmp_path / "part-*.tar"))
    full = list(source.samples(limits=FAST))
    for cut in range(len(full)):
        resumed = list(source.samples(full[cut].after, limits=FAST))
        assert [(s.key, s.caption, s.image, s.after) for s in resumed] == \
            [(s.key, s.caption, s.image, s.after) for s in full[cut + 1:]]


def test_bad_samples_are_yielded_with_their_reason(tmp_path, make_shard, monkeypatch):
    samples = [
        {"__key__": "a", "jpg": _JPEGS[0], "txt": "fine"},
        {"__key__": "b", "jpg": _JPEGS[1]},
        {"__key__": "c", "jpg": _JPEGS[2], "txt": "   "},
        {"__key__": "d", "txt": "no picture"},
        {"__key__": "e", "jpg": _JPEGS[3], "txt": b"\xff\xfe caption"},
        {"__key__": "f", "jpg": _JPEGS[4] * 40, "txt": "too big"},
    ]
    path = tmp_path / "bad.tar"
    path.write_bytes(make_shard(samples))
    monkeypatch.setattr(stream, "MAX_IMAGE_BYTES", 10 * len(_JPEGS[4]))
    got = {s.key: s.skip for s in local_webdataset(path).samples(limits=FAST)}
    assert got["a"] is None
    assert "no caption" in got["b"] and "empty caption" in got["c"] and "no image" in got["d"]
    assert "UTF-8" in got["e"] and "cap" in got["f"]


def _hub_with_shards(fake_hub, make_shard, sizes, name="cc12m"):
    spec = stream.HUB_DATASETS[name]
    start = 0
    for shard, n in enumerate(sizes):
        fake_hub.add_file(spec["repo"], spec["pattern"].format(shard=shard), make_shard(_samples(_make_jpeg_cache, start, n)))
        start += n
    return spec


def test_hub_shards_are_pinned_to_the_commit_the_hub_names(fake_hub, make_shard, monkeypatch):
    spec = _hub_with_shards(fake_hub, make_shard, [2, 2])
    monkeypatch.setitem(stream.HUB_DATASETS, "cc12m", {**spec, "n_shards": 2})
    source = hub_webdataset("cc12m", limits=FAST)
    commit = fake_hub.commit(spec["repo"])
    assert source.identity["revision"] == commit
    assert all(url.startswith(fake_hub.url) and f"/resolve/{commit}/" in url for url in source.urls)
    assert [s.caption for s in source.samples(limits=FAST)] == [f"caption number {i}" for i in range(4)]
    # the dataset moves on: a source pinned to the old commit is refused by the hub, not silently mixed
    fake_hub.add_file(spec["repo"], "README.md", b"changed")
    with pytest.raises(ShardError, match="shard 0"):
        list(hub_webdataset("cc12m", revision=commit, limits=FAST).samples(limits=FAST))


def test_an_unreachable_hub_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(ShardError, match="HF_ENDPOINT"):
        hub_webdataset("cc3m", limits=FAST)


def _damaged(data: bytes, member_index: int) -> bytes:
    """The shard with the header of member `member_index` overwritten (its checksum no longer matches)."""
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        offset = archive.getmembers()[member_index].offset
    return data[:offset] + b"garbage!" * 64 + data[offset + 512:]


def test_a_corrupt_member_header_is_retried_and_never_cuts_the_shard_short(fake_hub, make_shard, monkeypatch):
    spec = _hub_with_shards(fake_hub, make_shard, [5])
    monkeypatch.setitem(stream.HUB_DATASETS, "cc12m", {**spec, "n_shards": 1})
    name = spec["pattern"].format(shard=0)
    good = fake_hub.repos[("dataset", spec["repo"])].files[name]
    fake_hub.fault(spec["repo"], name, corrupt=_damaged(good, 7), corrupt_times=1)
    samples = list(hub_webdataset("cc12m", limits=FAST).samples(limits=FAST))
    assert [s.key for s in samples] == [f"{i:06d}" for i in range(5)]
    ranges = [r for m, p, r in fake_hub.requests if m == "GET" and p.endswith(name)]
    assert ranges[0] is None and ranges[1] is not None  # the retry continued at the last good sample


def test_a_shard_that_stays_corrupt_is_named_and_nothing_after_the_damage_is_used(fake_hub, make_shard, monkeypatch):
    spec = _hub_with_shards(fake_hub, make_shard, [5])
    monkeypatch.setitem(stream.HUB_DATASETS, "cc12m", {**spec, "n_shards": 1})
    name = spec["pattern"].format(shard=0)
    good = fake_hub.repos[("dataset", spec["repo"])].files[name]
    fake_hub.fault(spec["repo"], name, corrupt=_damaged(good, 7))
    seen = []
    with pytest.raises(ShardError, match=f"shard 0 .*{name}.*could not be read to its end"):
        for sample in hub_webdataset("cc12m", limits=FAST).samples(limits=FAST):
            seen.append(sample.key)
    assert seen == ["000000", "000001"]  # member 7 is sample 2's second member: samples 0 and 1 are whole


def test_a_truncated_download_is_resumed_from_the_last_good_sample(fake_hub, make_shard, monkeypatch):
    spec = _hub_with_shards(fake_hub, make_shard, [6])
    monkeypatch.setitem(stream.HUB_DATASETS, "cc12m", {**spec, "n_shards": 1})
    name = spec["pattern"].format(shard=0)
    size = len(fake_hub.repos[("dataset", spec["repo"])].files[name])
    fake_hub.fault(spec["repo"], name, truncate_at=size // 2, truncate_times=1)
    samples = list(hub_webdataset("cc12m", limits=FAST).samples(limits=FAST))
    assert [s.caption for s in samples] == [f"caption number {i}" for i in range(6)]


def test_a_missing_shard_is_not_retried(fake_hub, make_shard, monkeypatch):
    spec = _hub_with_shards(fake_hub, make_shard, [2])
    monkeypatch.setitem(stream.HUB_DATASETS, "cc12m", {**spec, "n_shards": 2})
    source = hub_webdataset("cc12m", limits=FAST)
    with pytest.raises(ShardError, match="shard 1"):
        list(source.samples(limits=FAST))
    assert fake_hub.gets(spec["pattern"].format(shard=1)) == 1


def test_a_trickling_mirror_hits_the_deadline_and_is_named(fake_hub, make_shard, monkeypatch):
    spec = _hub_with_shards(fake_hub, make_shard, [3])
    monkeypatch.setitem(stream.HUB_DATASETS, "cc12m", {**spec, "n_shards": 1})
    name = spec["pattern"].format(shard=0)
    fake_hub.fault(spec["repo"], name, trickle_s=0.05)
    slow = Limits(connect_timeout=5, read_timeout=5, min_rate=2000.0, grace=0.5, retries=1, backoff=0.01)
    with pytest.raises(ShardError, match=f"shard 0 .*{name}.*stalled"):
        list(hub_webdataset("cc12m", limits=slow).samples(limits=slow))
