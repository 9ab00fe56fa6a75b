"""Data-parallel training: which process this is, and starting N of them with torchrun.

``t4r-app train --nproc N`` starts ``torch.distributed.run --standalone --nproc_per_node N``
with the same command minus ``--nproc``; each process is one rank of a data-parallel run that
the Hugging Face Trainer sets up from torchrun's environment (NCCL on GPUs, one process per
GPU; gloo on CPU). Several machines: start ``torchrun`` on each yourself with its rendezvous
flags (see the README). The rank and world size come from torchrun's environment variables,
which exist before the Trainer initialises the process group, so the data can be sharded
before training starts.
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from t4r_app.model.device import default_device


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Rank 0 writes the run's files and prints; the other ranks only train."""
    return rank() == 0


def backend() -> str:
    """NCCL between GPUs, gloo between CPU processes."""
    return "nccl" if default_device() == "cuda" else "gloo"


def any_rank(flag: bool) -> bool:
    """True on every rank when it is True on one: a stop decision every rank must take together."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return flag
    value = torch.tensor([1 if flag else 0], device="cuda" if torch.distributed.get_backend() == "nccl" else "cpu")
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item())


def finish() -> None:
    """Leave the process group together, once rank 0 has written the run. A rank that exits on its
    own while gloo's threads still run aborts ("terminate called without an active exception")."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def describe(batch_size: int, learning_rate: float) -> str:
    """The line a distributed run logs first: ranks, backend, effective batch, learning rate."""
    ranks = world_size()
    return (
        f"data-parallel training: {ranks} processes ({backend()}), {batch_size} windows per process and step, "
        f"effective batch {batch_size * ranks}; learning rate {learning_rate:g} as configured (not scaled: "
        f"for the single-process run's effective batch, set train.batch_size={max(1, batch_size // ranks)})"
    )


def launch(nproc: int, arguments: list[str]) -> int:
    """Run ``python -m t4r_app ARGUMENTS`` as ``nproc`` ranks on this machine; the exit status of torchrun."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "t4r_app",
        *arguments,
    ]
    environment = dict(os.environ)
    # Each rank gets an equal share of the cores: N processes with every core each would fight.
    environment.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return subprocess.run(command, env=environment).returncode
