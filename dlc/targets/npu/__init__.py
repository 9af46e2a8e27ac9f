"""The simulated NPU target (`npu-sim`): the target and its lowering (target.py) and the
cycle-counting simulator that runs its instruction streams (simulator.py)."""
