"""Keys cached rotated (`--key-rope cached`) give the logits of keys rotated in the graph, through
evictions, rank shifts, merges and re-normalisation, for every policy."""

import dataclasses
import warnings

import numpy as np
import pytest

from edgekv.export.exporter import ExportOptions
from edgekv.runtime import key_rotation
from edgekv.runtime.bundle import Bundle
from edgekv.runtime.cache import KVCache
from edgekv.runtime.errors import EdgeKVError
from edgekv.runtime.key_rotation import KeyRotation
from edgekv.runtime.session import Session

BUDGET, CHUNK = 48, 8


def _stream(bundle: Bundle, policy: str, backend: str = "ort", limit: int = 0,
            tokens: int = 150) -> tuple[list[np.ndarray], Session]:
    """Prefill in chunks, then one token at a time past the budget: every step's logits."""
    session = Session.open(bundle, policy=policy, backend=backend)
    if limit and session.cache.rotation is not None:
        session.cache.rotation.limit[...] = limit
    ids = (np.arange(tokens) * 7 + 3) % 500
    out = [session.step(bundle.embed(ids[i:i + CHUNK])).copy() for i in range(0, 40, CHUNK)]
    out += [session.step(bundle.embed(ids[i:i + 1])).copy() for i in range(40, tokens)]
    return out, session


@pytest.fixture(scope="module")
def pair(tiny_bundle):
    return (Bundle.open(tiny_bundle("llama", budget=BUDGET, chunk=CHUNK)),
            Bundle.open(tiny_bundle("llama", budget=BUDGET, chunk=CHUNK, key_rope="cached")))


@pytest.mark.filterwarnings("ignore:policy")
@pytest.mark.parametrize("policy", ["streaming", "window", "h2o", "snapkv", "inf-mllm"])
def test_cached_rotation_matches_the_graph_rotation(pair, policy):
    graph, cached = pair
    assert cached.manifest.key_rope == "cached" and "pos_shift" in cached.manifest.inputs
    want, _ = _stream(graph, policy)
    got, session = _stream(cached, policy)
    assert session.cache.evictions > 50  # the stream ran far past the budget
    for w, g in zip(want, got, strict=True):
        assert np.abs(w - g).max() < 2e-4


def test_streaming_re_rotates_only_the_sinks(pair):
    _, cached = pair
    _, session = _stream(cached, "streaming")
    rotation, cache = session.cache.rotation, session.cache
    evicting_steps = cache.evictions
    sinks = 4 * cache.orig_pos.shape[0] * cache.orig_pos.shape[1]
    # every eviction moves the window's ranks: the shift follows, the sinks turn
    assert 0 < rotation.rotated <= sinks * evicting_steps
    assert np.all(rotation.shift > 0)


@pytest.mark.parametrize("piece", [key_rotation.PIECE, 7])  # 7: every turn in many pieces
def test_renormalisation_keeps_the_logits(pair, piece, monkeypatch):
    monkeypatch.setattr(key_rotation, "PIECE", piece)
    graph, cached = pair
    want, _ = _stream(graph, "streaming")
    # a table just above budget + chunk: the shift hits it every few evictions
    got, session = _stream(cached, "streaming", limit=BUDGET + CHUNK + 5)
    assert session.cache.rotation.shift.max() <= 5
    for w, g in zip(want, got, strict=True):
        assert np.abs(w - g).max() < 2e-4


def test_scored_policies_are_warned_of_the_cost(pair):
    _, cached = pair
    with pytest.warns(UserWarning, match="--key-rope graph"):
        Session.open(cached, policy="h2o")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Session.open(cached, policy="streaming")
        Session.open(cached, policy="h2o", position_mode="absolute")


@pytest.mark.filterwarnings("ignore:policy")
def test_torch_backend_reads_a_rotated_bundle(pair):
    _, cached = pair
    ort_logits, _ = _stream(cached, "h2o", tokens=70)
    torch_logits, _ = _stream(cached, "h2o", backend="torch", tokens=70)
    for a, b in zip(ort_logits, torch_logits, strict=True):
        assert np.abs(a - b).max() < 2e-4


def test_merges_average_pre_rope_keys():
    cache = KVCache.allocate(1, 1, 4, 4)
    cache.rotation = KeyRotation.allocate((1, 1, 4), [1.0, 0.1], 1.0, 100, by_rank=False)
    plain = KVCache.allocate(1, 1, 4, 4)
    rng = np.random.default_rng(0)
    first, second = rng.normal(size=(2, 1, 1, 1, 4)).astype(np.float32)
    for c in (cache, plain):
        c.write(np.array([[[2]]]), first, first, np.array([7]))
        c.merge_into(np.array([[2]]), second[:, :, 0], second[:, :, 0])
    at = (np.array([0]), np.array([0]), np.array([2]))
    assert np.allclose(cache.prerope_keys(at), plain.keys[at], atol=1e-6)
    assert np.allclose(cache.keys[at], cache.rotation.place(plain.keys[at], np.array([7])),
                       atol=1e-6)


def test_cached_keys_need_the_ort_target():
    with pytest.raises(EdgeKVError, match="--target ort"):
        ExportOptions(key_rope="cached", target="tensorrt").check()
    with pytest.raises(EdgeKVError, match="--key-rope"):
        ExportOptions(key_rope="sideways").check()


def test_device_backends_refuse_a_rotated_bundle(pair, monkeypatch):
    from edgekv.runtime import backends

    _, cached = pair
    fake = dataclasses.make_dataclass("Fake", [("name", str, "trt")])
    monkeypatch.setitem(backends.BACKENDS, "trt", lambda *_a: fake())
    with pytest.raises(EdgeKVError, match="key-rope graph"):
        Session.open(cached, backend="trt")


def test_int4_cached_matches_int4_graph(tiny_bundle):
    graph = Bundle.open(tiny_bundle("llama", budget=BUDGET, chunk=CHUNK, dtype="int4"))
    cached = Bundle.open(tiny_bundle("llama", budget=BUDGET, chunk=CHUNK, dtype="int4",
                                     key_rope="cached"))
    want, _ = _stream(graph, "streaming", tokens=90)
    got, _ = _stream(cached, "streaming", tokens=90)
    for w, g in zip(want, got, strict=True):
        # measured 1.8e-4 (the 8-bit lm_head's activation codes); 5.6e-3 with the sinks not
        # re-rotated
        assert np.abs(w - g).max() < 1e-3


def test_cli_export_takes_key_rope(tiny_model_dir, tmp_path):
    from edgekv.cli import main

    out = tmp_path / "cached"
    assert main(["export", str(tiny_model_dir("llama")), "--out", str(out), "--budget", "48",
                 "--chunk", "8", "--key-rope", "cached"]) == 0
    assert Bundle.open(out).manifest.key_rope == "cached"


def test_snapshot_restores_the_rotation(pair):
    from edgekv.runtime.snapshot import Snapshot

    _, cached = pair
    _, session = _stream(cached, "streaming", tokens=80)
    saved = Snapshot.take(session)
    before = session.step(cached.embed(np.array([9]))).copy()
    for token in range(20):  # the shift moves on, the sinks turn
        session.step(cached.embed(np.array([token])))
    saved.restore(session)
    assert np.array_equal(session.step(cached.embed(np.array([9]))), before)



def _twin_streams(cached: Bundle, tamper) -> tuple[KVCache, KVCache]:
    """Two streaming sessions fed the same tokens one at a time past the budget, `tamper`
    called on the second one's cache before each of its steps; their caches."""
    ids = (np.arange(90) * 7 + 3) % 500
    sessions = [Session.open(cached, policy="streaming") for _ in range(2)]
    for s in sessions:
        s.feed(ids[:BUDGET])
    for i in range(BUDGET, 90):
        tamper(sessions[1].cache)
        for s in sessions:
            s.step(cached.embed(ids[i:i + 1]))
    return sessions[0].cache, sessions[1].cache


def test_a_streaming_step_turns_what_a_full_scan_turns(pair):
    """The alignment that knows which rank each head dropped (KVCache.rank_drop) turns the
    same keys to the same places as a scan of the whole cache."""
    _, cached = pair

    def forget(cache: KVCache) -> None:
        cache.rank_drop = None  # forget what moved: align checks every key

    known, scanned = _twin_streams(cached, forget)
    assert known.evictions == scanned.evictions > 30
    assert known.rotation.rotated == scanned.rotation.rotated > 0
    assert np.array_equal(known.rotation.key_pos, scanned.rotation.key_pos)
    assert np.array_equal(known.keys, scanned.keys)


def test_a_decode_step_takes_the_slot_it_freed(pair):
    _, cached = pair
    session = Session.open(cached, policy="streaming")
    session.feed((np.arange(BUDGET + 1) * 7 + 3) % 500)
    cache = session.cache
    freed = cache.last_freed.copy()
    assert np.all(np.take_along_axis(cache.orig_pos, freed[..., None], -1) >= 0)  # refilled
    session.policy.make_room(cache, 1)
    slots = cache.free_slots(1)[..., 0]
    assert not np.array_equal(slots, freed)  # a new eviction, elsewhere
    assert np.array_equal(slots, cache.last_freed)
    # the slot the scan finds: each head's only free one
    assert np.array_equal(slots, np.argmin(cache.valid[..., :BUDGET], axis=-1))


def test_the_oldest_slot_guessed_from_the_ring_is_the_one_a_scan_finds(pair):
    """`slot_of_rank` guesses from the slot freed last and checks; a wrong hint costs a scan,
    never a wrong slot."""
    _, cached = pair
    session = Session.open(cached, policy="streaming")
    ids = (np.arange(150) * 7 + 3) % 500
    session.feed(ids[:BUDGET])
    cache, sinks = session.cache, session.policy.sinks
    rng = np.random.default_rng(0)
    for i in range(BUDGET, 150):
        scan = np.argmax(cache.rank == sinks, axis=-1)
        assert np.array_equal(cache.slot_of_rank(sinks), scan)
        hint = cache.last_freed
        if hint is not None:
            cache.last_freed = rng.integers(0, BUDGET, hint.shape)
            assert np.array_equal(cache.slot_of_rank(sinks), scan)
            cache.last_freed = hint
        session.step(cached.embed(ids[i:i + 1]))
    assert cache.evictions > 100


def test_a_stale_memo_of_the_sinks_is_not_trusted(pair):
    """The keys the last streaming step turned are checked before they are turned again: a
    memo naming other keys, as many, gives what the scan gives."""
    _, cached = pair

    def mislead(cache: KVCache) -> None:
        if cache.rotation.sinks_turned is not None:  # the neighbours of the sinks
            cache.rotation.sinks_turned = cache.rotation.sinks_turned + 1

    good, stale = _twin_streams(cached, mislead)
    assert good.rotation.rotated == stale.rotation.rotated > 0
    assert np.array_equal(good.rotation.key_pos, stale.rotation.key_pos)
    assert np.array_equal(good.keys, stale.keys)


@pytest.mark.parametrize("sinks", [[0, 1], [1]])  # one key past the int8 range; one within
def test_int8_turns_round_and_saturate_as_the_codec(sinks):
    """An int8 key turned is the float key turned, rounded half to even and saturated: a
    pair whose modulus passes 127 saturates after some turns (it must not wrap)."""
    rotation = KeyRotation.allocate((1, 1, 4), [1.0, 0.3], 1.0, 100, by_rank=True)
    keys = np.zeros((1, 1, 4, 4), np.int8)
    keys[0, 0, 0] = [127, 127, 127, 127]  # modulus 179.6
    keys[0, 0, 1] = [50, -20, 30, 101]
    flat = np.array(sinks)
    at = np.unravel_index(flat, (1, 1, 4))
    orig_pos = np.arange(4).reshape(1, 1, 4)
    exact = keys[at].astype(np.float64)
    for _ in range(3):
        rotation._turn_int8(keys, at, flat, orig_pos, 1)
        exact = rotation.turn(exact, 1)
        assert np.array_equal(keys[at], np.clip(np.rint(exact), -128, 127).astype(np.int8))
    assert (len(sinks) == 2) == bool((np.abs(exact) > 127.5).any())  # saturation was tested


def test_int8_turns_of_many_keys_go_in_pieces(monkeypatch):
    """A re-normalisation turns every key, each by its own delta: in pieces of PIECE keys
    (7 here), the same keys as the float64 turn rounded."""
    monkeypatch.setattr(key_rotation, "PIECE", 7)
    rng = np.random.default_rng(0)
    rotation = KeyRotation.allocate((2, 3, 10), [1.0, 0.3, 0.05], 1.0, 100, by_rank=True)
    keys = rng.integers(-80, 80, (2, 3, 10, 6)).astype(np.int8)
    flat = np.arange(60)
    at = np.unravel_index(flat, (2, 3, 10))
    delta = rng.integers(-9, 9, 60)
    want = np.clip(np.rint(rotation.turn(keys[at].astype(np.float64), delta)), -128, 127)
    rotation._turn_int8(keys, at, flat, np.arange(60).reshape(2, 3, 10), delta)
    assert np.array_equal(keys[at], want.astype(np.int8))
