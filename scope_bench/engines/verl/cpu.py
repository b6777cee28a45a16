"""verl 0.9.1 on a CPU-only machine: what `scope-bench train --backend verl --device cpu` loads.

verl's own `RayPPOTrainer.fit` runs unchanged (Ray actors, FSDP2 workers, the async agent loop, the
checkpoint manager); this module fills the gaps verl 0.9.1 leaves on a machine without accelerators.
It is pinned to verl 0.9.1 (`check_version`) and imported only in CPU mode, in every process, through
`VERL_USE_EXTERNAL_MODULES` (verl imports it at the end of its own `__init__`):

| gap in verl 0.9.1                                       | filled by                                   |
|---------------------------------------------------------|---------------------------------------------|
| no CPU platform (detection falls back to `nvidia`)      | `PlatformCPU`, registered and made current  |
| process-group backend `cpu:gloo,cpu:gloo` (duplicate)   | `_plain_gloo` around `init_process_group`   |
| FSDP engines registered for cuda/npu only               | `VERL_ENGINE_DEVICE=cuda` (engine lookup)   |
| flops counter asks the device its name                  | `CPUDevice.get_device_name`                 |
| no CPU rollout (only vLLM/SGLang/TRT-LLM replicas)      | `hf_rollout.py`: `HFRolloutServer` + `HFReplica` + `HFServerAdapter` (rollout name `hf`) |
| Ray placement asks for GPUs                             | the launcher declares logical GPUs to Ray   |

The config side (fsdp2, sdpa attention, no remove-padding, float32, small batches) is
`config/cpu.yaml`. Nothing here is used on a GPU run.
"""

from __future__ import annotations

import os
import types
from contextlib import contextmanager

import torch
import torch.distributed

from verl.plugin.platform import platform_manager
from verl.plugin.platform.platform_base import PlatformBase
from verl.plugin.platform.platform_manager import PlatformRegistry, set_platform
from verl.workers.rollout import base as rollout_base
from verl.workers.rollout.replica import RolloutReplicaRegistry

VERL_VERSION = "0.9.1"
ROLLOUT_NAME = "hf"
HF_ROLLOUT_MODULE = "scope_bench.engines.verl.hf_rollout"  # the rollout itself (HFReplica, HFServerAdapter)
# what every Ray process of a CPU run needs in its environment (the launcher adds them to runtime_env)
ENV = {"VERL_PLATFORM": "cpu", "VERL_ENGINE_DEVICE": "cuda", "TOKENIZERS_PARALLELISM": "false"}


def check_version() -> None:
    import verl

    if verl.__version__ != VERL_VERSION:
        raise RuntimeError(f"--device cpu supports verl {VERL_VERSION} (its gaps on CPU are filled by "
                           f"{__name__}); found verl {verl.__version__}")


class CPUDevice(types.SimpleNamespace):
    """The `torch.<device>` namespace verl asks its platform for: `torch.cpu` plus the memory, RNG
    and cache calls verl makes on any device, answered for host memory."""

    def __getattr__(self, name):
        return getattr(torch.cpu, name)

    @staticmethod
    def is_available() -> bool:
        return True

    @staticmethod
    def device_count() -> int:
        return 1

    @staticmethod
    def set_device(*_args, **_kwargs) -> None:
        return None

    @staticmethod
    def get_device_name(*_args) -> str:
        return "CPU"

    @staticmethod
    def mem_get_info(*_args) -> tuple[int, int]:
        page = os.sysconf("SC_PAGE_SIZE")
        return os.sysconf("SC_AVPHYS_PAGES") * page, os.sysconf("SC_PHYS_PAGES") * page

    @staticmethod
    def empty_cache() -> None:
        return None

    ipc_collect = reset_peak_memory_stats = set_per_process_memory_fraction = staticmethod(
        lambda *args, **kwargs: None)
    memory_allocated = memory_reserved = max_memory_allocated = max_memory_reserved = staticmethod(
        lambda *args, **kwargs: 0)
    get_rng_state = staticmethod(lambda *args: torch.get_rng_state())
    set_rng_state = staticmethod(lambda state, *args: torch.set_rng_state(state))
    manual_seed = manual_seed_all = staticmethod(lambda seed: torch.manual_seed(seed))


@PlatformRegistry.register(platform="cpu")
class PlatformCPU(PlatformBase):
    """verl's platform interface for host CPUs: device `cpu`, collectives over gloo, and Ray's `GPU`
    resource as a logical slot per worker (the launcher declares as many as it places workers)."""

    device_module = CPUDevice()

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check=False) -> bool:
        return os.environ.get("VERL_PLATFORM", "").lower() == "cpu"  # never auto-detected on a GPU host

    def current_device(self) -> str:
        return "cpu"  # verl passes it to `.to(...)`/`device=`: an index would name an accelerator

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index=None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0):
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return "GPU"

    def ray_noset_envvars(self) -> list[str]:
        return []

    def rollout_env_vars(self) -> dict:
        return {}

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self):
        return None


def _plain_gloo(init_process_group):
    """verl builds backends as `cpu:gloo,<device>:<backend>`, which is `cpu:gloo,cpu:gloo` here and
    rejected by torch as a duplicate device; on CPU every collective is plain gloo."""

    def init(*args, backend=None, **kwargs):
        if isinstance(backend, str) and set(backend.split(",")) <= {"cpu:gloo", "gloo"}:
            backend = "gloo"
        return init_process_group(*args, backend=backend, **kwargs)

    init.scope_plain_gloo = True
    return init


def _hf_replica():
    """The `hf` replica class, imported when verl first asks for it: `hf_rollout.py` imports verl,
    whose own `__init__` loads this module in every process, so importing it here would be a circle."""
    from scope_bench.engines.verl.hf_rollout import HFReplica

    return HFReplica


def register() -> None:
    """Make this process's verl CPU-ready: platform, gloo, the `hf` rollout (idempotent)."""
    check_version()
    if not isinstance(platform_manager._current_platform, PlatformCPU):
        set_platform(PlatformCPU())
    if not getattr(torch.distributed.init_process_group, "scope_plain_gloo", False):
        torch.distributed.init_process_group = _plain_gloo(torch.distributed.init_process_group)
    RolloutReplicaRegistry.register(ROLLOUT_NAME, _hf_replica)
    rollout_base._ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = f"{HF_ROLLOUT_MODULE}.HFServerAdapter"
    for key, value in ENV.items():
        os.environ.setdefault(key, value)


if os.environ.get("VERL_PLATFORM", "").lower() == "cpu":
    register()

