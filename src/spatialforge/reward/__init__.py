"""Dense reward annotation for robot trajectories (``spatialforge reward``).

Modules: :mod:`.types` (Frame, Trajectory), :mod:`.readers` (read_trajectory: video, frame folder, RGB-D folder,
LeRobot dataset), :mod:`.engine` (per-frame distances and rewards), :mod:`.synth` (synthetic trajectories with
exact geometry), :mod:`.metrics` (distance error, Value-Order Correlation).
"""
