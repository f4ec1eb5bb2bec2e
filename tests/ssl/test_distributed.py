"""Two CPU processes (gloo): one step on 2 x B/2 == one process on B (loss and gradients)."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cmrprior.ssl.distributed import gather_with_grad, wrap_ddp
from cmrprior.ssl.model import build_model, simclr_loss

MODEL_ARGS = {"backbone": "tiny", "in_chans": 1, "backbone_kwargs": {"widths": (8, 16), "norm": "none"},
              "proj_hidden_dim": 16, "proj_dim": 8, "proj_batch_norm": False}
B = 8


def _inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(B, 1, 16, 16, generator=g), torch.randn(B, 1, 16, 16, generator=g)


def _model():
    torch.manual_seed(1)
    return build_model(MODEL_ARGS)


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        model = wrap_ddp(_model())
        v1, v2 = _inputs()
        b = B // world
        sl = slice(rank * b, (rank + 1) * b)
        loss = simclr_loss(model, v1[sl], v2[sl], temperature=0.2, precision="fp32", gather=True)
        loss.backward()
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)
        # gather_with_grad alone: rank order and offset
        x = torch.full((2, 3), float(rank), requires_grad=True)
        allx, offset = gather_with_grad(x)
        (allx * torch.arange(allx.shape[0]).view(-1, 1)).sum().backward()
        torch.save({"loss": mean_loss / world, "grads": {k: p.grad for k, p in model.module.named_parameters()},
                    "allx": allx.detach(), "offset": offset, "xgrad": x.grad}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_process(tmp_path):
    # fork: the children reuse the imported torch (spawn would re-import it in each child: slow on 2 cores)
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork")
    model = _model()
    v1, v2 = _inputs()
    loss = simclr_loss(model, v1, v2, temperature=0.2, precision="fp32", gather=False)
    loss.backward()
    for rank in range(2):
        r = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        torch.testing.assert_close(r["loss"], loss.detach(), rtol=1e-5, atol=1e-6)
        for k, p in model.named_parameters():
            torch.testing.assert_close(r["grads"][k], p.grad, rtol=1e-4, atol=1e-6, msg=k)
        assert torch.equal(r["allx"], torch.tensor([[0.0] * 3] * 2 + [[1.0] * 3] * 2))
        assert r["offset"] == 2 * rank
        # d/dx of sum_i i * allx_i, summed over both ranks' losses = 2 * row index
        rows = torch.arange(2 * rank, 2 * rank + 2, dtype=torch.float32).view(-1, 1) * 2
        assert torch.equal(r["xgrad"], rows.expand(2, 3))
