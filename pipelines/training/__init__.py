"""The training loop of the train step and of every sweep trial, and the one place a Ray ``TorchTrainer`` is built.

    loop_config.py   LoopConfig: what one worker's loop needs (the run, the data, the layers, where it runs)
    loop.py          ``train_loop_per_worker``: set up -> resume -> fit (validation inside), per worker
    setup.py         the model with FoRA applied, the optimizer and the schedule, on the worker's device
    checkpoint_state.py  a checkpoint written and read back (adapter, optimizer, scheduler, RNG, history)
    validation.py    the response-token loss of the validation split
    batches.py       each worker's share of a step's global batch and the loss normalisation (W workers = one)
    contexts.py      in-process, Ray Train worker or Tune trial: one interface for the loop
    divergence.py    a non-finite loss, gradient or parameter stops the run before anything of it is kept
    trainer.py       ``build_torch_trainer``: ScalingConfig, TorchConfig (``train.backend``), storage, failures
    outputs.py       what a finished run leaves: adapter, history, loss curve, summary
    calibration_artifacts.py  the calibrate step's files (Fisher report, selected layers, FILet energies),
                     written and read in one place
    calibration_cache.py  the Fisher files of the same weights, data and ``fora`` settings, kept for the next run
    faults.py        test-only step hooks (a failure or a non-finite loss at a chosen step); never in a config

Imports ``fora_core``, ``config``, ``runtime`` and ``data``; the train step (``steps/train.py``) and the sweep
(``sweep/trials.py``) call it, and neither reaches into the other.
"""
