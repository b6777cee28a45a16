"""SCOPE and its baselines as a verl recipe (verl 0.9.1, `RayPPOTrainer`), with the project's method
core, method configs (`trainers/`) and grader. Importing this package does not import verl:

    launch.py    `scope-bench train --backend verl` (hydra composition, Ray, verl's run_ppo)
    data_cli.py  `scope-bench data prepare` (question/answer data -> verl parquet)
    config.py    verl's ppo_trainer + config/scope_trainer.yaml + the trainers/ method blocks
    stage.py     the method's stage on verl's rollout batch (rectification, PRM reward, metrics)
    rewrite.py   rewriting rows of verl's DataProto (the mixed trajectories)
    loss.py      the hybrid loss (eq. 6) registered with verl           [imports verl]
    trainer.py   ScopeRayPPOTrainer and its Ray task runner             [imports verl]
    cpu.py       what verl 0.9.1 lacks on CPU (`--device cpu` only)     [imports verl]
"""
