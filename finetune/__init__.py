"""Fine-tuning ported ResNets faithfully: Caffe's SGD semantics and BN statistics by plain averaging.

Public API: `CaffeSGD` (Caffe's momentum SGD as a torch optimizer), `convert_hyperparams` between the
Caffe / PyTorch / unit-gain conventions, `CaffeLRPolicy` (Caffe's lr policies), `read_solver`
(a Caffe solver.prototxt), and `recalibrate_bn` (BN statistics as exact averages).
"""

from finetune.conventions import CONVENTIONS, HyperParamConversion, SGDHyperParams, convert_hyperparams
from finetune.schedule import LR_POLICIES, CaffeLRPolicy
from finetune.sgd import CaffeSGD
from finetune.solver import SolverConfig, SolverError, read_solver

__all__ = [
    "CONVENTIONS",
    "LR_POLICIES",
    "CaffeLRPolicy",
    "CaffeSGD",
    "HyperParamConversion",
    "SGDHyperParams",
    "SolverConfig",
    "SolverError",
    "convert_hyperparams",
    "read_solver",
]
