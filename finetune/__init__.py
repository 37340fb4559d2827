"""Fine-tuning ported ResNets faithfully: Caffe's SGD semantics and BN statistics by plain averaging.

Public API: `CaffeSGD` (Caffe's momentum SGD as a torch optimizer), `convert_hyperparams` between the
Caffe / PyTorch / unit-gain conventions, `CaffeLRPolicy` (Caffe's lr policies), `read_solver`
(a Caffe solver.prototxt), `plan_optimizer` (the torch optimizer and scheduler that reproduce a
solver), and `recalibrate_bn` (BN statistics as exact averages).
"""

from resnet_port.finetune.conventions import (
    CONVENTIONS,
    HyperParamConversion,
    SGDHyperParams,
    convert_hyperparams,
)
from resnet_port.finetune.net_params import BlobMultipliers, read_net_multipliers
from resnet_port.finetune.plan import OptimizerPlan, plan_optimizer
from resnet_port.finetune.recalibrate import RecalibrationResult, recalibrate_bn
from resnet_port.finetune.schedule import LR_POLICIES, CaffeLRPolicy
from resnet_port.finetune.sgd import CaffeSGD
from resnet_port.finetune.solver import SolverConfig, SolverError, read_solver

__all__ = [
    "CONVENTIONS",
    "LR_POLICIES",
    "BlobMultipliers",
    "CaffeLRPolicy",
    "CaffeSGD",
    "HyperParamConversion",
    "OptimizerPlan",
    "RecalibrationResult",
    "SGDHyperParams",
    "SolverConfig",
    "SolverError",
    "convert_hyperparams",
    "plan_optimizer",
    "read_net_multipliers",
    "read_solver",
    "recalibrate_bn",
]
