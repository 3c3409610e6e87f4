"""Instability checks, the recovery policy and fault injection; depends on torch only."""

from stability.checks import Check, GradNormCheck, LogitsCheck, LossCheck, ParamsCheck
from stability.config import CheckName, StabilityConfig
from stability.faults import Fault, FaultConfigError, FaultInjector, FaultTarget
from stability.monitor import StabilityMonitor, Verdict
from stability.policy import Action, PolicyMode, RecoveryPolicy, TrainingDiverged

__all__ = [
    "Action",
    "Check",
    "CheckName",
    "Fault",
    "FaultConfigError",
    "FaultInjector",
    "FaultTarget",
    "GradNormCheck",
    "LogitsCheck",
    "LossCheck",
    "ParamsCheck",
    "PolicyMode",
    "RecoveryPolicy",
    "StabilityConfig",
    "StabilityMonitor",
    "TrainingDiverged",
    "Verdict",
]
