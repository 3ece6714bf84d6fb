"""The three architectures on CUDA (skipped without a GPU)."""

import pytest
import torch

import ctdnn

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("cls,kw", [(ctdnn.ResNet, {}), (ctdnn.HamiltonianNet, {}),
                                    (ctdnn.NeuralODE, {"hidden": 8, "rtol": 1e-5, "atol": 1e-7})])
def test_forward_backward_and_training_on_cuda(cls, kw):
    torch.manual_seed(0)
    cpu = cls(5, 3, width=6, **kw).double()
    gpu = cls(5, 3, width=6, **kw).double()
    gpu.load_state_dict(cpu.state_dict())
    gpu.cuda()
    x = torch.randn(16, 5, dtype=torch.float64)
    out = gpu(x.cuda())
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), cpu(x), rtol=1e-6, atol=1e-8)
    data = (x, torch.randn(16, 3, dtype=torch.float64))
    res = ctdnn.train(gpu, data, epochs=2, batch_size=8, device="cuda", progress=False)
    assert res.status == "completed"
    assert next(gpu.parameters()).device.type == "cuda"
