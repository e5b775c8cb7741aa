"""``fora sweep``: a Ray Tune sweep over the layer budget K, the learning rates and the method.

    driver.py       the whole sweep (data and Fisher once, trials, best trial evaluated and registered) and
                    the sweep step of the KFP DAG (``sweep_trials``)
    tune_runner.py  Ray Tune over the trials: space, scheduler, resume, MLflow children, the best trial
    trials.py       the (method, K) arms and one trial's driver
    report.py       results.csv / results.md and the K-sensitivity and learning-curve plots

Imports the packages below it (``training`` for the loop and its trainer, ``steps`` for the stages); nothing
below imports it.
"""
