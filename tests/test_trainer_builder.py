"""The one ``TorchTrainer`` builder (``pipelines/training/trainer.py``): what the train step and every
multi-worker sweep trial get from the run config. The sweep's trial running on it with ``train.backend`` is
``tests/test_sweep.py::test_a_multi_worker_trial_uses_train_backend``."""

import os
import pickle

import pytest

from pipelines.config.run_config import RunConfig
from pipelines.training.faults import FailAt, NaNLossAt
from pipelines.training.loop_config import LoopConfig
from pipelines.training.trainer import build_torch_trainer, collective_backend

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.mark.parametrize("use_gpu, backend, expected", [
    (True, "auto", "nccl"), (False, "auto", "gloo"),     # Ray Train's own choice
    (True, "gloo", "gloo"), (False, "nccl", "nccl"),     # what the config names, whatever the device
])
def test_the_collective_backend_is_what_the_config_names(use_gpu, backend, expected):
    run = RunConfig.from_dict({"train": {"use_gpu": use_gpu, "backend": backend}})
    assert collective_backend(run.train) == expected


def test_the_trainer_carries_the_run_configs_workers_backend_storage_and_failures(tmp_path):
    run = RunConfig.from_dict({"train": {"use_gpu": True, "backend": "gloo", "num_workers": 3, "cpus_per_worker": 2,
                                         "placement_strategy": "SPREAD", "max_failures": 4}})
    loop = LoopConfig(run=run, data_dir=str(tmp_path), layers=[1, 2], where="ray", hooks=(FailAt(3),))
    trainer = build_torch_trainer(run, loop, "trial-7", str(tmp_path / "store"), keep_checkpoints=2)
    scaling = trainer.scaling_config
    assert (scaling.num_workers, scaling.use_gpu, scaling.placement_strategy) == (3, True, "SPREAD")
    assert scaling.resources_per_worker == {"CPU": 2}
    assert trainer.backend_config.backend == "gloo"
    assert trainer.run_config.name == "trial-7" and trainer.run_config.failure_config.max_failures == 4
    assert trainer.run_config.checkpoint_config.num_to_keep == 2
    assert trainer.train_loop_config == {"loop": loop}


def test_a_loop_config_travels_to_workers_with_its_test_hooks():
    """Ray pickles ``train_loop_config`` to every worker: the run, the layers and the fault hooks arrive whole."""
    loop = LoopConfig(run=RunConfig.from_dict({}), data_dir="s3://b/data", layers=[0, 5], where="ray",
                      hooks=(FailAt(3), NaNLossAt(4)))
    back = pickle.loads(pickle.dumps(loop.for_ray()))
    assert LoopConfig.of(back) == loop and LoopConfig.of(loop) is loop
    with pytest.raises(RuntimeError, match="injected failure at step 3"):
        back["loop"].hooks[0].before_step(3, resumed=False)
    back["loop"].hooks[0].before_step(3, resumed=True)  # a resumed run is past the failure
    assert back["loop"].hooks[1].on_loss(3, 1.0) == 1.0
