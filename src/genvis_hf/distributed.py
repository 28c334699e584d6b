"""Splitting a list of videos between the processes of an `accelerate launch` and gathering what they made.

`genvis-hf evaluate` and `genvis-hf segment` run unchanged in one process. Started by `accelerate launch` with
several processes (torchrun-style: `--multi_gpu`, a config file, several machines), each process takes one
contiguous share of the videos (`PartialState.split_between_processes`: shares differ by at most one video and,
concatenated in process order, give the original order), and the main process gathers the results.

On CPUs the processes talk over gloo: `PartialState(cpu=True)` when the model runs on the CPU, because
Accelerate only picks a backend by itself for an accelerator. Note that `accelerate launch --cpu --num_processes
N` starts ONE process unless it is given an mpirun hostfile (`--mpirun_hostfile`); `accelerate launch --multi_gpu
--num_processes N ... --device cpu` starts N CPU processes through torchrun (see docs/distributed.md).
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import Any

# Set by torchrun (`accelerate launch --multi_gpu`, configs with several processes) or by an MPI launcher.
_WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def launched_world_size() -> int:
    """Number of processes this process was launched with (1 when started directly)."""
    for name in _WORLD_SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 1:
            return int(value)
    return 1


def single_process_launch_note() -> str | None:
    """A note when `accelerate launch --cpu` started this as its only process: asking it for N processes
    starts one without an mpirun hostfile, which looks like "no split"."""
    if os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true" and launched_world_size() == 1:
        return (
            "note: 1 process: `accelerate launch --cpu` starts a single process without an mpirun hostfile; "
            "for N CPU processes use `accelerate launch --multi_gpu --num_processes N ... --device cpu`"
        )
    return None


class VideoSplit:
    """The processes of one job: this process's share of a list of videos, and the collectives.

    With one process (a plain `genvis-hf ...`) nothing distributed is set up: the share is every video and
    gathering returns this process's own list. With several, Accelerate's `PartialState` sets up the process
    group (gloo on CPUs, NCCL on GPUs).

    Args:
        device: the device the command was asked for ("cpu", "cuda", ...); see `device()`.

    Raises `ValueError` when launched with several processes that Accelerate cannot join for `device` (a GPU
    asked for where there is none): every process would otherwise do every video.
    """

    def __init__(self, device: str = "cpu"):
        import torch

        self.state = None
        if launched_world_size() > 1:
            from accelerate import PartialState

            self.state = PartialState(cpu=torch.device(device).type == "cpu")
            if self.state.num_processes == 1:  # every process would do every video and write the same files
                raise ValueError(f"launched as {launched_world_size()} processes but Accelerate joined none of "
                                 f"them for device {device!r}: use --device cpu for CPU processes")  # fmt: skip
        self.num_processes = self.state.num_processes if self.state is not None else 1
        self.process_index = self.state.process_index if self.state is not None else 0
        self.is_main_process = self.process_index == 0

    def share(self, count: int) -> list[int]:
        """This process's indices among `count` videos: a contiguous block; blocks differ by at most one video
        and, in process order, are `0 .. count-1` (`PartialState.split_between_processes`)."""
        if not self.distributed:
            return list(range(count))
        with self.state.split_between_processes(list(range(count))) as share:
            return list(share)

    @property
    def distributed(self) -> bool:
        return self.num_processes > 1

    def device(self, requested: str) -> str:
        """The device to run on: `requested`, except that an accelerator in a multi-process job is this
        process's own (cuda:LOCAL_RANK)."""
        import torch

        if self.distributed and torch.device(requested).type != "cpu":
            return str(self.state.device)
        return requested

    def local_main_process_first(self):
        """Context: on each machine, its first process runs the block first (e.g. builds the data set cache), the
        machine's other processes then reuse what it made."""
        return self.state.local_main_process_first() if self.distributed else nullcontext()

    def gather_on_main(self, items: list) -> list[list] | None:
        """Every process's `items`, in process order, on the main process (`None` elsewhere). Only the main
        process receives them (`torch.distributed.gather_object`): results are not copied to every process."""
        if not self.distributed:
            return [items]
        import torch.distributed as dist

        gathered = [None] * self.num_processes if self.is_main_process else None
        dist.gather_object(items, gathered, dst=0)
        return gathered

    def gather_everywhere(self, value: Any) -> list:
        """Every process's `value`, in process order, on every process (for small values: counts, flags)."""
        if not self.distributed:
            return [value]
        import torch.distributed as dist

        gathered = [None] * self.num_processes
        dist.all_gather_object(gathered, value)
        return gathered

    def broadcast_from_main(self, value: Any) -> Any:
        """The main process's `value` on every process."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def close(self) -> None:
        """End of the job: wait for every process, then tear the process group down. Left to the interpreter's exit,
        gloo's threads are sometimes destroyed while still joinable, and the process aborts ("terminate called
        without an active exception", exit -6) after its work is done."""
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.barrier()
                dist.destroy_process_group()

    def describe(self, counts: list[int], verb: str) -> str:
        """One log line: how many videos each process handled."""
        shares = ", ".join(f"process {index}: {count}" for index, count in enumerate(counts))
        plural = "es" if self.num_processes > 1 else ""
        return f"{sum(counts)} videos {verb} by {self.num_processes} process{plural} ({shares})"


__all__ = ["VideoSplit", "launched_world_size", "single_process_launch_note"]
