"""The machinery that trains and evaluates any task.

``task`` (the interface a task implements), ``loop`` (train, evaluate,
resume), ``checkpointing`` (Orbax), ``cadence`` (when to log, evaluate,
save), ``parallel`` (mesh and shardings), ``optimizers`` (schedules and
SGD) and ``state`` (abstract shapes of states and variables).
"""
