"""QuantLinear: built from nn.Linear or a bitsandbytes Linear4bit, moved, cast and saved."""

import bitsandbytes as bnb
import pytest
import torch
from torch import nn

from studio_kernels.modules import QuantLinear
from studio_kernels.nf4 import dequantize_nf4_reference


def _linear(in_f=70, out_f=45, bias=True, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(in_f, out_f, bias=bias)


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("bias", [True, False])
def test_from_linear_output_close_to_linear(backend, bias):
    lin = _linear(bias=bias)
    q = QuantLinear.from_linear(lin, backend=backend)
    assert (q.in_features, q.out_features) == (70, 45)
    assert (q.bias is not None) == bias
    x = torch.randn(3, 5, 70)
    y, y_ref = q(x), lin(x)
    assert y.shape == y_ref.shape
    # NF4 error: relative to the output scale, not bitwise
    rel = (y - y_ref).norm() / y_ref.norm()
    assert 1e-4 < rel < 0.15
    assert torch.allclose(y, nn.functional.linear(x, q.dequantize(), q.bias), atol=1e-5, rtol=1e-5)


def test_dequantize_and_compute_dtype():
    lin = _linear()
    q = QuantLinear.from_linear(lin, compute_dtype=torch.bfloat16)
    w = q.dequantize()
    assert w.dtype == torch.float32 and w.shape == lin.weight.shape
    assert torch.equal(w, dequantize_nf4_reference(q.nf4_weight()))
    x = torch.randn(4, 70)
    y = q(x)
    assert y.dtype == torch.float32  # computed in bf16, returned in the input dtype
    assert torch.equal(y, q(x.bfloat16()).float())


def test_state_survives_to_dtype_and_state_dict():
    lin = _linear()
    q = QuantLinear.from_linear(lin)
    stats_before = q.absmax_absmax.clone()
    w_before = q.dequantize()
    q.to(torch.bfloat16)  # a model-wide cast must not touch the quantization statistics
    assert q.absmax_absmax.dtype == torch.float32 and torch.equal(q.absmax_absmax, stats_before)
    assert q.qweight.dtype == torch.uint8 and q.bias.dtype == torch.bfloat16
    assert torch.equal(q.dequantize(torch.float32), w_before)

    fresh = QuantLinear.from_linear(_linear(seed=1))
    fresh.load_state_dict(QuantLinear.from_linear(lin).state_dict())
    assert torch.equal(fresh.dequantize(), w_before)
    assert set(fresh.state_dict()) == {"qweight", "absmax_q", "absmax_absmax", "absmax_offset", "absmax_code", "bias"}


def test_from_bnb_linear4bit_gives_the_same_layer():
    lin = _linear(in_f=128, out_f=64)
    layer4 = bnb.nn.Linear4bit(128, 64, bias=True, compute_dtype=torch.float32, quant_type="nf4")
    layer4.weight = bnb.nn.Params4bit(
        lin.weight.data.clone(), requires_grad=False, quant_type="nf4", compress_statistics=True
    )._quantize("cpu")
    layer4.bias = nn.Parameter(lin.bias.data.clone())
    q = QuantLinear.from_bnb(layer4)
    ours = QuantLinear.from_linear(lin)
    assert torch.equal(q.qweight, ours.qweight) and torch.equal(q.absmax_q, ours.absmax_q)
    x = torch.randn(6, 128)
    assert torch.allclose(q(x), layer4(x), atol=1e-5, rtol=1e-5)


def test_user_errors():
    with pytest.raises(TypeError, match="nn.Linear"):
        QuantLinear.from_linear(nn.Conv1d(3, 3, 1))
    with pytest.raises(ValueError, match="backend"):
        QuantLinear.from_linear(_linear(), backend="cuda")
    with pytest.raises(ValueError, match="expects 70"):
        QuantLinear.from_linear(_linear())(torch.randn(2, 71))


@pytest.mark.parametrize("double_quant", [True, False])
def test_make_shardable_turns_the_packed_bytes_into_frozen_parameters(double_quant):
    """FSDP shards parameters and replicates buffers: the 4-bit bytes become uint8 parameters, results unchanged."""
    lin = _linear()
    q = QuantLinear.from_linear(lin, double_quant=double_quant, backend="torch")
    x = torch.randn(3, 70)
    before, keys = q(x), set(q.state_dict())
    q.make_shardable().make_shardable()  # idempotent
    params = dict(q.named_parameters())
    integer = {"qweight", "absmax_q"} if double_quant else {"qweight"}
    assert integer <= set(params) and all(params[n].dtype == torch.uint8 and not params[n].requires_grad for n in integer)
    # Float statistics stay buffers: a mixed-precision policy would round parameters to bf16.
    assert ("absmax_absmax" in dict(q.named_buffers())) if double_quant else ("absmax" in dict(q.named_buffers()))
    assert set(q.state_dict()) == keys
    assert torch.equal(q(x), before)
    q.to(torch.bfloat16)
    assert q.qweight.dtype == torch.uint8 and torch.equal(q.dequantize(torch.float32), QuantLinear.from_linear(lin, double_quant=double_quant).dequantize(torch.float32))
