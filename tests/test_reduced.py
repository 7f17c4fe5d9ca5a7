"""Exact top-k from a reduced-precision candidate pass (asif_nb.reduced, model.with_index("reduced")): forced on the
CPU it gives the plain fp32 path's result bit for bit; its error bound holds; it is chosen only when measured faster."""
import numpy as np
import pytest
import torch

from asif_nb import AsifModel
from asif_nb.reduced import error_bound


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_forced_reduced_pass_equals_the_plain_path_bit_for_bit(clustered_pairs, same_csr, precision):
    images, texts, queries, prompts = clustered_pairs(5000, n_queries=100, spread=0.4)
    images[3000:3300] = images[:300]  # exact duplicates: ties the rescoring must give to the lower index
    plain = AsifModel(images, texts, k=80, p=5, device="cpu")
    reduced = plain.with_index("reduced", precision=precision, force=True)
    backend = reduced.index["image"]
    for k in (80, 7):
        plain.k = reduced.k = k
        same_csr(reduced.encode_image(queries), plain.encode_image(queries))
        same_csr(reduced.encode_image(images[:40]), plain.encode_image(images[:40]))
        assert backend.last["route"] == "reduced" and backend.last["candidates_mean"] >= k
    same_csr(reduced.encode_text(prompts), plain.encode_text(prompts))


def test_the_error_bound_covers_every_low_precision_score(pair_data):
    images, _, rng = pair_data(n_pairs=3000, d1=256)
    a = torch.nn.functional.normalize(torch.from_numpy(images), dim=1)
    q = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((64, 256)).astype(np.float32)), dim=1)
    exact = (q.double() @ a.double().T)
    for low, u in ((torch.bfloat16, 2.0 ** -8), (torch.float16, 2.0 ** -11)):
        approx = (q.to(low) @ a.to(low).T).double()
        worst = float((approx - exact).abs().max())
        bound = error_bound(256, low, low)
        # it holds, and is the worst case of three roundings (inputs twice, output once), not more
        assert worst <= bound <= 3.1 * u


def test_not_chosen_unless_measured_faster(clustered_pairs, same_csr):
    images, texts, queries, _ = clustered_pairs(3000, spread=0.4)
    plain = AsifModel(images, texts, k=40, device="cpu")
    never = plain.with_index("reduced", max_ratio=0.0).index["image"]  # no product is 0x float32's time
    assert not never.chosen and never.build["tile_time_ratio"] > 0
    reduced = plain.with_index({"image": never})
    same_csr(reduced.encode_image(queries), plain.encode_image(queries))
    assert never.last["route"] == "plain"
    with pytest.raises(ValueError, match="precision='int4'"):
        plain.with_index("reduced", precision="int4")
