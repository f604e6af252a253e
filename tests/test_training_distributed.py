"""SF-V under accelerate with two CPU processes (gloo): gradients are all-reduced, so both ranks
hold identical generator and head weights after a few steps although they drew different data."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, model_dir: str, out: str, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    from accelerate import Accelerator
    from safetensors.torch import save_file

    from networks.models import load_model
    from training.sfv import SFVConfig, SFVTrainer

    acc = Accelerator(cpu=True)
    assert acc.num_processes == world and acc.distributed_type.value == "MULTI_CPU"
    cfg = SFVConfig(model=model_dir, out=out, frames=3, height=32, width=32, num_clips=4, batch_size=1,
                    optimizer="adam", lr_g=1e-3, lr_d=1e-3, grad_accum=2)
    trainer = SFVTrainer(cfg, model=load_model(model_dir), accelerator=acc)
    losses = [trainer.train_step() for _ in range(2)]
    trainer.save()  # every process takes part in the checkpoint
    gen = torch.cat([p.detach().flatten() for p in acc.unwrap_model(trainer.generator).parameters()])
    heads = torch.cat([p.detach().flatten() for p in acc.unwrap_model(trainer.heads).parameters()])
    save_file({"generator": gen, "heads": heads}, os.path.join(out, f"rank{rank}.safetensors"))
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(losses, f)
    acc.wait_for_everyone()
    acc.end_training()


def test_two_gloo_processes_hold_identical_weights(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    from networks.models import load_model

    torch.multiprocessing.spawn(_worker, args=(2, str(tiny_model_dir), str(tmp_path), _free_port()), nprocs=2, join=True)
    r0, r1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    assert torch.equal(r0["generator"], r1["generator"])
    assert torch.equal(r0["heads"], r1["heads"])
    teacher = torch.cat([p.flatten() for p in load_model(tiny_model_dir).unet.parameters()])
    assert not torch.equal(r0["generator"], teacher)  # the weights did move
    l0, l1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert l0[0]["g_recon"] != pytest.approx(l1[0]["g_recon"])  # ranks saw different data
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step-0000002"
    assert (tmp_path / "checkpoints" / "step-0000002" / "random_states_1.pkl").is_file()
