"""Spacetime patches for any grid, and 3D RoPE positions."""

import pytest
import torch

from sora_core.patch import (apply_rope, grid_positions, interleaved_tables, patchify, rope_tables, rotate_pairs,
                             unpatchify)


@pytest.mark.parametrize("shape", [(2, 4, 1, 8, 8), (1, 4, 5, 6, 14), (1, 8, 33, 2, 4), (1, 3, 2, 16, 4)])
def test_patchify_then_unpatchify_is_the_identity(shape):
    x = torch.randn(shape)
    tokens = patchify(x, (1, 2, 2))
    grid = (shape[2], shape[3] // 2, shape[4] // 2)
    assert tokens.shape == (shape[0], grid[0] * grid[1] * grid[2], shape[1] * 4)
    assert torch.equal(unpatchify(tokens, grid, (1, 2, 2)), x)


def test_temporal_patches_round_trip_too():
    x = torch.randn(1, 4, 6, 4, 4)
    assert torch.equal(unpatchify(patchify(x, (2, 2, 2)), (3, 2, 2), (2, 2, 2)), x)


def test_token_order_matches_grid_positions():
    x = torch.zeros(1, 1, 3, 4, 6)
    x[0, 0, 2, 2, 4] = 1.0  # latent cell (t=2, h=2, w=4) -> token (2, 1, 2)
    tokens = patchify(x, (1, 2, 2))
    index = int(tokens[0].abs().sum(-1).argmax())
    assert grid_positions((3, 2, 3))[index].tolist() == [2, 1, 2]


def test_a_grid_that_does_not_divide_into_patches_names_the_axis_and_nearest_sizes():
    with pytest.raises(ValueError, match=r"latent width=7 .*\[6, 8\]"):
        patchify(torch.zeros(1, 4, 1, 4, 7), (1, 2, 2))


def test_rope_rotates_different_channels_for_time_height_and_width():
    head_dim = 24
    origin = torch.tensor([[0, 0, 0]])
    tables = {axis: rope_tables(torch.tensor([[1 if a == axis else 0 for a in range(3)]]), head_dim)[0] for axis in range(3)}
    base = rope_tables(origin, head_dim)[0]
    changed = {axis: set(torch.nonzero((tables[axis] - base)[0].abs() > 1e-6).flatten().tolist()) for axis in range(3)}
    assert all(changed[a] for a in range(3))
    assert not (changed[0] & changed[1]) and not (changed[0] & changed[2]) and not (changed[1] & changed[2])


def test_rope_makes_attention_scores_depend_only_on_relative_position():
    head_dim = 24
    q, k = torch.randn(1, 1, 1, head_dim), torch.randn(1, 1, 1, head_dim)

    def score(pq, pk):
        cq, sq = rope_tables(torch.tensor([pq]), head_dim)
        ck, sk = rope_tables(torch.tensor([pk]), head_dim)
        return (apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum()

    assert torch.allclose(score([1, 2, 3], [0, 0, 1]), score([4, 7, 5], [3, 5, 3]), atol=1e-4)
    assert not torch.allclose(score([1, 2, 3], [0, 0, 1]), score([1, 2, 3], [0, 1, 1]), atol=1e-4)


def test_the_fast_pairwise_rotation_equals_rope():
    pos = grid_positions((3, 4, 5))
    cos, sin = rope_tables(pos, 24)
    x = torch.randn(2, 3, pos.shape[0], 24)
    assert torch.allclose(rotate_pairs(x, *interleaved_tables(cos, sin)), apply_rope(x, cos, sin), atol=1e-6)
