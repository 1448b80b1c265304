"""The masked group norm of exact batching (emission/padding.py): each padded row normalised as
the utterance alone is, whatever its padding holds, in any chunking of its statistics."""
from __future__ import annotations

import pytest
import torch

from ctclab.core.arrays import gpu_present
from ctclab.emission import padding
from ctclab.emission.padding import MaskedGroupNorm, valid_statistics

CHANNELS = 6
VALID = (50, 37, 23, 9)


def _batch(offset: float = 0.0) -> torch.Tensor:
    """(4, CHANNELS, 50) float32 rows of VALID steps, then padding far from the rows' values."""
    gen = torch.Generator().manual_seed(3)
    x = offset + 2.0 * torch.randn(len(VALID), CHANNELS, max(VALID), generator=gen) + 0.5
    for row, n in enumerate(VALID):
        x[row, :, n:] = 40.0 * torch.randn(CHANNELS, max(VALID) - n, generator=gen) - 7.0
    return x


def _norm() -> torch.nn.GroupNorm:
    norm = torch.nn.GroupNorm(CHANNELS, CHANNELS)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(CHANNELS, generator=gen))
        norm.bias.copy_(torch.randn(CHANNELS, generator=gen))
    return norm


# chunks of 1, 7 and 9 steps, and one chunk for all (the shortest row holds 9 steps)
@pytest.mark.parametrize("chunk_steps", [1, 7, 9, 1000])
def test_each_row_as_alone(monkeypatch, chunk_steps):
    monkeypatch.setattr(padding, "GROUP_NORM_CHUNK", chunk_steps * len(VALID) * CHANNELS)
    x, norm = _batch(), _norm()
    masked = MaskedGroupNorm(norm)
    masked.valid = torch.tensor(VALID)
    with torch.no_grad():
        got = masked(x)
        for row, n in enumerate(VALID):
            alone = norm(x[row:row + 1, :, :n])
            torch.testing.assert_close(got[row:row + 1, :, :n], alone, rtol=1e-5, atol=1e-5)
    assert got.dtype == x.dtype and got.shape == x.shape


def test_without_lengths_it_is_the_plain_norm():
    x, norm = _batch(), _norm()
    with torch.no_grad():
        assert torch.equal(MaskedGroupNorm(norm)(x), norm(x))


def test_statistics_are_stable_far_from_zero(monkeypatch):
    """Values of 1e4 with a spread of 2: E[x^2] - E[x]^2 in float32 would lose the variance
    (1e8 against 4); the pairwise merge keeps it to float64's within 1e-3."""
    monkeypatch.setattr(padding, "GROUP_NORM_CHUNK", 7 * len(VALID) * CHANNELS)
    x = _batch(offset=1e4)
    mean, var = valid_statistics(x, torch.tensor(VALID))
    for row, n in enumerate(VALID):
        own = x[row, :, :n].double()
        torch.testing.assert_close(mean[row, :, 0].double(), own.mean(-1), rtol=1e-6, atol=0)
        torch.testing.assert_close(var[row, :, 0].double(), own.var(-1, correction=0),
                                   rtol=1e-3, atol=0)


def test_a_row_without_steps_gets_zero_statistics():
    x = _batch()
    mean, var = valid_statistics(x, torch.tensor([50, 0, 23, 9]))
    assert torch.equal(mean[1], torch.zeros(CHANNELS, 1))
    assert torch.equal(var[1], torch.zeros(CHANNELS, 1))
    assert torch.isfinite(mean).all() and torch.isfinite(var).all()


def test_bfloat16_under_autocast_stays_bfloat16():
    """A bfloat16 input (CPU autocast) comes back bfloat16, within its rounding of the float32
    result: the statistics and the multiply-add run in float32."""
    x, norm = _batch(), _norm()
    masked = MaskedGroupNorm(norm)
    masked.valid = torch.tensor(VALID)
    with torch.no_grad():
        exact = masked(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = masked(x.bfloat16())
    assert low.dtype == torch.bfloat16
    for row, n in enumerate(VALID):
        # the input's rounding (2^-8 relative, values up to ~3 sigma) and the output's
        torch.testing.assert_close(low[row, :, :n].float(), exact[row, :, :n],
                                   rtol=2 ** -7, atol=0.05)


@pytest.mark.skipif(not gpu_present(), reason="no CUDA GPU: the float32 and bfloat16 cases above "
                    "run the same code on the CPU")
def test_float16_under_cuda_autocast():
    """The emission stage's GPU setting: a float16 input under CUDA autocast comes back float16,
    within its rounding of the float32 result on the CPU."""
    x, norm = _batch(), _norm()
    masked = MaskedGroupNorm(norm)
    masked.valid = torch.tensor(VALID)
    with torch.no_grad():
        exact = masked(x)
        masked.cuda()
        with torch.autocast("cuda", dtype=torch.float16):
            low = masked(x.cuda().half()).cpu()
    assert low.dtype == torch.float16
    for row, n in enumerate(VALID):
        torch.testing.assert_close(low[row, :, :n].float(), exact[row, :, :n], rtol=2 ** -9,
                                   atol=0.01)
