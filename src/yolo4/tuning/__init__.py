"""Hyper-parameter search (`yolo4 tune`): a genetic search over TrainConfig fields, each trial a
short training; on Ray Tune when installed, else in-process. Sits above `training`, below `api`."""
