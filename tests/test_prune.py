"""Exact top-k through projection bounds (asif_nb.prune, with_index("pruned")): the plain fp32 path's result bit for
bit (set, ties, values) while skipping anchors where the data is clustered; the plain path itself where it is not."""
import numpy as np
import pytest

from asif_nb import AsifModel
from asif_nb.prune import RunningBest
from asif_nb.topk import decode_keys, encode_keys

N = 6 * 2048 + 300  # six whole tiles and a padded one


def _pair(images, texts, k, **index):
    plain = AsifModel(images, texts, k=k, p=3, device="cpu")
    return plain, plain.with_index("pruned", **index)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_pruned_equals_the_plain_path_bit_for_bit_and_skips_most_of_the_product(clustered_pairs, same_csr,
                                                                                   precision):
    images, texts, queries, prompts = clustered_pairs(N, n_queries=300)
    plain, pruned = _pair(images, texts, k=60, precision=precision)
    backend = pruned.index["image"]
    assert backend.exact and backend.pays and backend.build["precision"] == precision
    same_csr(pruned.encode_image(queries), plain.encode_image(queries))
    assert backend.last["route"] == "pruned" and backend.last["visited"] < 0.5
    same_csr(pruned.encode_text(prompts), plain.encode_text(prompts))
    np.testing.assert_array_equal(pruned.classify(queries, prompts[:8])[1], plain.classify(queries, prompts[:8])[1])


def test_ties_go_to_the_lowest_anchor_index_when_anchors_arrive_out_of_order(clustered_pairs, same_csr):
    images, texts, queries, _ = clustered_pairs(N, n_queries=200, seed=3)
    # exact copies far apart in index order: equal similarities that the walk meets in cell order
    images[N // 2:N // 2 + 400] = images[:400]
    images[-100:] = images[1000:1100]
    plain, pruned = _pair(images, texts, k=100)
    for k in (1, 37, 100, 2500):  # also k beyond one tile, and k changed after the build
        plain.k = pruned.k = k
        same_csr(pruned.encode_image(queries), plain.encode_image(queries))
        same_csr(pruned.encode_image(images[:50]), plain.encode_image(images[:50]))  # anchors as queries: sims of 1
        # a cluster holds ~1,600 anchors, spread over 256-anchor tiles: even k=2500 leaves tiles to skip
        assert pruned.index["image"].last["route"] == "pruned"
    forced = plain.with_index("pruned", force=True)  # k beyond one tile through the walk: k-th values start at -inf
    for k in (2100, 2500):
        plain.k = forced.k = k
        same_csr(forced.encode_image(queries), plain.encode_image(queries))
        assert forced.index["image"].last["route"] == "pruned"


def test_where_the_blas_rounds_by_shape_the_walk_keeps_the_plain_paths_tiles(clustered_pairs, same_csr,
                                                                             monkeypatch):
    import asif_nb.prune as prune

    import torch

    images, texts, queries, _ = clustered_pairs(N, n_queries=100, seed=7)
    plain, pruned = _pair(images, texts, k=60)
    probe = torch.nn.functional.normalize(torch.from_numpy(images[:2048]), dim=1)
    assert pruned.index["image"].tile_size == (256 if prune.same_bits(probe, 256) else 2048)
    monkeypatch.setattr(prune, "same_bits", lambda rows, width: width == 2048)  # as if narrow products rounded apart
    plain, coarse = _pair(images, texts, k=60)
    backend = coarse.index["image"]
    assert backend.tile_size == 2048 and backend.tiles == 7
    same_csr(coarse.encode_image(queries), plain.encode_image(queries))
    assert backend.last["route"] == "pruned"
    monkeypatch.setattr(prune, "same_bits", lambda rows, width: False)  # rounding by row count too: never pinned
    plain, unpinned = _pair(images, texts, k=60, force=True)
    same_csr(unpinned.encode_image(queries), plain.encode_image(queries))
    assert unpinned.index["image"].last["route"] == "plain"


def test_a_k_whose_first_tiles_are_nearly_all_gives_up_before_multiplying(clustered_pairs, same_csr, monkeypatch):
    import asif_nb.prune as prune

    images, texts, queries, _ = clustered_pairs(N, n_queries=60, seed=8)
    plain, pruned = _pair(images, texts, k=60)
    backend = pruned.index["image"]
    tiles_multiplied, tile = [], prune.PrunedSearch._tile
    monkeypatch.setattr(prune.PrunedSearch, "_tile", lambda self, t: tiles_multiplied.append(t) or tile(self, t))
    plain.k = pruned.k = 3200  # 4k anchors' worth of first tiles is every tile
    same_csr(pruned.encode_image(queries), plain.encode_image(queries))
    assert backend.last["route"] == "plain (the bounds did not prune)" and tiles_multiplied == []


def test_unclustered_anchors_are_answered_by_the_plain_path(pair_data, same_csr):
    images, texts, rng = pair_data(n_pairs=N, d1=48, d2=8)
    plain, pruned = _pair(images, texts, k=200)
    backend = pruned.index["image"]
    assert not backend.pays and backend.build["sample_visited"] > backend.max_visited
    queries = rng.standard_normal((40, 48)).astype(np.float32)
    same_csr(pruned.encode_image(queries), plain.encode_image(queries))
    assert backend.last["route"] == "plain" and backend.last["visited"] == 1.0


def test_forced_walk_on_unclustered_anchors_is_still_exact(pair_data, same_csr):
    images, texts, rng = pair_data(n_pairs=N, d1=24, d2=8)
    plain, pruned = _pair(images, texts, k=30, force=True)
    queries = rng.standard_normal((70, 24)).astype(np.float32)
    same_csr(pruned.encode_image(queries), plain.encode_image(queries))
    assert pruned.index["image"].last["route"] == "pruned"


def _far_queries(images, rank, seed, n=300):
    """Queries with nothing along the anchors' ``rank`` leading directions: every tile's bound is alike, none can be
    skipped."""
    unit = images / np.linalg.norm(images, axis=1, keepdims=True)
    leading = np.linalg.svd(unit, full_matrices=False)[2][:rank]
    far = np.random.default_rng(seed).standard_normal((n, images.shape[1]))
    return (far - far @ leading.T @ leading).astype(np.float32)


def test_queries_the_bounds_cannot_tell_apart_hand_the_call_to_the_plain_path(clustered_pairs, same_csr):
    images, texts, _, _ = clustered_pairs(N)
    plain, pruned = _pair(images, texts, k=60)
    far = _far_queries(images, pruned.index["image"].rank, seed=9)
    same_csr(pruned.encode_image(far), plain.encode_image(far))
    assert pruned.index["image"].last["route"].startswith("plain")


def test_more_blocks_than_threads_are_each_exact_and_land_in_their_rows(clustered_pairs, same_csr):
    images, texts, queries, _ = clustered_pairs(N, n_queries=4097, seed=11)  # four blocks (the last 1,022 rows), two
    plain, pruned = _pair(images, texts, k=50)                               # threads: blocks queue and finish apart
    same_csr(pruned.encode_image(queries), plain.encode_image(queries))
    assert pruned.index["image"].last["route"] == "pruned"


def test_one_block_giving_up_hands_the_whole_call_to_the_plain_path(clustered_pairs, same_csr):
    images, texts, queries, _ = clustered_pairs(N, n_queries=300, seed=12)
    plain, pruned = _pair(images, texts, k=60)
    far = _far_queries(images, pruned.index["image"].rank, seed=13)
    mixed = np.vstack([queries, far])  # the first block prunes, the second cannot
    same_csr(pruned.encode_image(mixed), plain.encode_image(mixed))
    assert pruned.index["image"].last["route"].startswith("plain")
    same_csr(pruned.encode_image(queries), plain.encode_image(queries))  # the next call walks again
    assert pruned.index["image"].last["route"] == "pruned"


def test_editing_pairs_drops_the_backend_and_stays_exact(clustered_pairs, same_csr):
    images, texts, queries, _ = clustered_pairs(N)
    plain, pruned = _pair(images, texts, k=40)
    pruned.remove_pairs([0, 5])
    plain.remove_pairs([0, 5])
    assert pruned.index == {}
    same_csr(pruned.encode_image(queries), plain.encode_image(queries))


def test_running_best_keeps_the_exact_top_k_of_out_of_order_parts():
    rng = np.random.default_rng(0)
    sims = rng.integers(0, 20, (5, 3000)).astype(np.float32)  # many ties
    best = RunningBest(5, 40)
    for part in np.array_split(rng.permutation(3000), 9):
        rows = np.array([0, 2, 3]) if part[0] % 2 else np.arange(5)
        best.add(rows, sims[rows][:, part], part)
        if not part[0] % 2:
            continue
        best.add(np.array([1, 4]), sims[[1, 4]][:, part], part)
    want = np.sort(encode_keys(sims, np.arange(3000)[None].repeat(5, 0)), axis=1)[:, -40:]
    got = np.sort(best.result(), axis=1)
    np.testing.assert_array_equal(got, want)
    values, index = decode_keys(got)
    assert (values[:, 0] <= values[:, -1]).all() and index.min() >= 0


def test_unknown_index_and_bad_modality_are_refused_with_the_fix(pair_data):
    images, texts, _ = pair_data()
    model = AsifModel(images, texts, k=5, device="cpu")
    with pytest.raises(ValueError, match="is not known: use one of pruned"):
        model.with_index("kd-tree")
    with pytest.raises(ValueError, match="modality='audio'"):
        model.with_index("pruned", modality="audio")
    with pytest.raises(ValueError, match="neither a name nor a search backend"):
        model.with_index({"image": 3})


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
@pytest.mark.parametrize("scale", [1.0, 1e-3, 50.0])
def test_tile_bounds_are_never_below_a_similarity_the_plain_path_computes(clustered_pairs, scale, precision):
    images, texts, queries, _ = clustered_pairs(N, n_queries=120, seed=5)
    _, pruned = _pair(images, texts, k=20, force=True, precision=precision)
    backend = pruned.index["image"]
    rows = np.vstack([queries, np.random.default_rng(1).standard_normal((40, images.shape[1]))]).astype(np.float32)
    rows *= scale  # the margins scale with |q|
    import torch

    bounds = backend.tile_bounds(torch.from_numpy(rows))
    sims = rows @ backend.rows.numpy().T  # the anchors in the route's layout, tile t = columns [w t, w (t+1))
    tile_max = np.maximum.reduceat(sims, np.arange(0, backend.n, backend.tile_size), axis=1)
    assert bounds.shape == tile_max.shape and (bounds >= tile_max).all()
    assert np.median(bounds - tile_max) < 0.5 * np.abs(scale)  # and tight enough to skip something


@pytest.mark.parametrize("precision, slack", [("float32", 1e-3), ("bfloat16", 2e-2)])
def test_tile_bounds_hold_where_they_are_tight_anchors_inside_the_projection(precision, slack):
    import torch

    rng = np.random.default_rng(6)
    images = np.zeros((N, 32), dtype=np.float32)
    images[:, :8] = rng.standard_normal((N, 8))  # every anchor in an 8-dim subspace: rank 8 leaves no residual
    _, pruned = _pair(images, images[:, :8].copy(), k=10, force=True, rank=8, precision=precision)
    backend = pruned.index["image"]
    rows = backend.rows.numpy()[::7]  # the anchors themselves: each row's best similarity is its own, 1
    bounds = backend.tile_bounds(torch.from_numpy(rows))
    tile_max = np.maximum.reduceat(rows @ backend.rows.numpy().T, np.arange(0, backend.n, backend.tile_size), axis=1)
    assert (bounds >= tile_max).all()
    assert (bounds - tile_max).max() < slack  # the bound is tight here, so only the margins keep it above


def test_a_rank_beyond_the_dimension_is_refused_and_small_dimensions_build(pair_data):
    images, texts, _ = pair_data(n_pairs=N, d1=5, d2=3)
    _, pruned = _pair(images, texts, k=10)  # the default rank (8) is cut to the dimension, on both modalities
    assert pruned.index["image"].rank == 5 and pruned.index["text"].rank == 3
    with pytest.raises(ValueError, match="rank=9 must be between 1 and"):
        AsifModel(images, texts, k=10, device="cpu").with_index("pruned", rank=9)


def test_bound_precision_is_chosen_at_build_and_a_bad_one_is_refused_with_the_fix(clustered_pairs):
    from asif_nb.prune import bfloat16_pays

    images, texts, _, _ = clustered_pairs(N, d1=100, n_queries=10)  # rank d/5 = 20 > d/10 = 10: bf16 may pay
    backend = _pair(images, texts, k=20)[1].index["image"]
    assert backend.precision == ("bfloat16" if bfloat16_pays(100) else "float32")  # measured once per process
    assert backend.rank == (20 if backend.precision == "bfloat16" else 10)
    # a rank given, or a dimension where d/5 and d/10 round to the same rank (8): bf16 would only loosen the bound
    assert _pair(images, texts, k=20, rank=12)[1].index["image"].precision == "float32"
    small, small_texts, _, _ = clustered_pairs(N, d1=32, n_queries=10)
    assert _pair(small, small_texts, k=20)[1].index["image"].precision == "float32"
    with pytest.raises(ValueError, match="pass 'auto', 'float32' or 'bfloat16'"):
        _pair(images, texts, k=20, precision="fp16")


def test_columns_rounded_up_to_bfloat16_are_never_below_their_values_and_within_one_step():
    from asif_nb.prune import _bfloat16_at_least

    values = np.abs(np.random.default_rng(0).standard_normal(10_000)) * np.logspace(-30, 3, 10_000)
    values[:3] = [0.0, 1.0, 1.0 + 2.0 ** -7]  # exactly representable ones stay
    rounded = _bfloat16_at_least(values).double().numpy()
    assert (rounded >= values).all() and rounded[1] == 1.0 and rounded[2] == values[2]
    assert (rounded <= values * (1 + 2.0 ** -7) + 1e-300).all()
