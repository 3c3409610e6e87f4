"""Instability checks, the recovery policy and fault injection; depends on torch only."""

from stability.checks import Check, GradNormCheck, LogitsCheck, LossCheck, ParamsCheck
from stability.faults import Fault, FaultInjector
from stability.monitor import StabilityMonitor, Verdict
from stability.policy import Action, RecoveryPolicy, TrainingDiverged

__all__ = [
    "Action",
    "Check",
    "Fault",
    "FaultInjector",
    "GradNormCheck",
    "LogitsCheck",
    "LossCheck",
    "ParamsCheck",
    "RecoveryPolicy",
    "StabilityMonitor",
    "TrainingDiverged",
    "Verdict",
]
