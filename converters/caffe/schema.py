"""Caffe's protobuf schema, built at run time: no ``protoc``, no generated code, no Caffe.

Only the messages and fields this toolkit reads are declared, with the field numbers of BVLC
``src/caffe/proto/caffe.proto`` (public facts: the numbers are what the files on disk carry).  The
deploy prototxts of the ResNet release, the train_val prototxts people fine-tune from (data layers,
``param { lr_mult decay_mult }``, ``include { phase }``, losses, accuracy) and the legacy V1
``layers`` format all parse.  A field not declared here is a parse error that names the field:
Caffe's own parser is just as strict.

Messages are built once into a private descriptor pool so that they never clash with another
package that registers its own ``caffe.*`` names.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "caffe"
_F = descriptor_pb2.FieldDescriptorProto

# Scalar type names used in the tables below -> protobuf field types.
_TYPES = {
    "string": _F.TYPE_STRING,
    "bytes": _F.TYPE_BYTES,
    "bool": _F.TYPE_BOOL,
    "float": _F.TYPE_FLOAT,
    "double": _F.TYPE_DOUBLE,
    "int32": _F.TYPE_INT32,
    "int64": _F.TYPE_INT64,
    "uint32": _F.TYPE_UINT32,
    "uint64": _F.TYPE_UINT64,
}

# Enums: name -> (values, nested-in message or None).
ENUMS: dict[str, tuple[dict[str, int], str | None]] = {
    "Phase": ({"TRAIN": 0, "TEST": 1}, None),
    "FillerParameter.VarianceNorm": ({"FAN_IN": 0, "FAN_OUT": 1, "AVERAGE": 2}, "FillerParameter"),
    "ParamSpec.DimCheckMode": ({"STRICT": 0, "PERMISSIVE": 1}, "ParamSpec"),
    "ConvolutionParameter.Engine": ({"DEFAULT": 0, "CAFFE": 1, "CUDNN": 2}, "ConvolutionParameter"),
    "ConvolutionParameter.CuDNNConvolutionAlgorithmSeeker": ({"GET": 0, "FINDEX": 1}, "ConvolutionParameter"),
    "PoolingParameter.PoolMethod": ({"MAX": 0, "AVE": 1, "STOCHASTIC": 2}, "PoolingParameter"),
    "PoolingParameter.Engine": ({"DEFAULT": 0, "CAFFE": 1, "CUDNN": 2}, "PoolingParameter"),
    "PoolingParameter.RoundMode": ({"CEIL": 0, "FLOOR": 1}, "PoolingParameter"),
    "EltwiseParameter.EltwiseOp": ({"PROD": 0, "SUM": 1, "MAX": 2}, "EltwiseParameter"),
    "ReLUParameter.Engine": ({"DEFAULT": 0, "CAFFE": 1, "CUDNN": 2}, "ReLUParameter"),
    "SoftmaxParameter.Engine": ({"DEFAULT": 0, "CAFFE": 1, "CUDNN": 2}, "SoftmaxParameter"),
    "DataParameter.DB": ({"LEVELDB": 0, "LMDB": 1}, "DataParameter"),
    "LRNParameter.NormRegion": ({"ACROSS_CHANNELS": 0, "WITHIN_CHANNEL": 1}, "LRNParameter"),
    "LRNParameter.Engine": ({"DEFAULT": 0, "CAFFE": 1, "CUDNN": 2}, "LRNParameter"),
    "LossParameter.NormalizationMode": ({"FULL": 0, "VALID": 1, "BATCH_SIZE": 2, "NONE": 3}, "LossParameter"),
    "SolverParameter.SolverMode": ({"CPU": 0, "GPU": 1}, "SolverParameter"),
    "SolverParameter.SnapshotFormat": ({"HDF5": 0, "BINARYPROTO": 1}, "SolverParameter"),
    "SolverParameter.SolverType": (
        {"SGD": 0, "NESTEROV": 1, "ADAGRAD": 2, "RMSPROP": 3, "ADADELTA": 4, "ADAM": 5}, "SolverParameter"
    ),
    "V1LayerParameter.LayerType": (
        {
            "NONE": 0, "ABSVAL": 35, "ACCURACY": 1, "ARGMAX": 30, "BNLL": 2, "CONCAT": 3,
            "CONTRASTIVE_LOSS": 37, "CONVOLUTION": 4, "DATA": 5, "DECONVOLUTION": 39, "DROPOUT": 6,
            "DUMMY_DATA": 32, "EUCLIDEAN_LOSS": 7, "ELTWISE": 25, "EXP": 38, "FLATTEN": 8,
            "HDF5_DATA": 9, "HDF5_OUTPUT": 10, "HINGE_LOSS": 28, "IM2COL": 11, "IMAGE_DATA": 12,
            "INFOGAIN_LOSS": 13, "INNER_PRODUCT": 14, "LRN": 15, "MEMORY_DATA": 29,
            "MULTINOMIAL_LOGISTIC_LOSS": 16, "MVN": 34, "POOLING": 17, "POWER": 26, "RELU": 18,
            "SIGMOID": 19, "SIGMOID_CROSS_ENTROPY_LOSS": 27, "SILENCE": 36, "SOFTMAX": 20,
            "SOFTMAX_LOSS": 21, "SPLIT": 22, "SLICE": 33, "TANH": 23, "WINDOW_DATA": 24, "THRESHOLD": 31,
        },
        "V1LayerParameter",
    ),
    "V1LayerParameter.DimCheckMode": ({"STRICT": 0, "PERMISSIVE": 1}, "V1LayerParameter"),
    # NVIDIA Caffe: the storage / math type of a layer or of the whole net (precision only).
    "Type": ({"DOUBLE": 0, "FLOAT": 1, "FLOAT16": 2, "INT": 3, "UINT": 4}, None),
    "BatchNormParameter.Engine": ({"DEFAULT": 0, "CAFFE": 1, "CUDNN": 2}, "BatchNormParameter"),
    "BNParameter.Engine": ({"DEFAULT": 0, "CAFFE": 1, "CUDNN": 2}, "BNParameter"),
    "BNParameter.BNMode": ({"LEARN": 0, "INFERENCE": 1}, "BNParameter"),
    "SigmoidParameter.Engine": ({"DEFAULT": 0, "CAFFE": 1, "CUDNN": 2}, "SigmoidParameter"),
}

# Messages: name -> fields (name, number, label, type, default or None).  label: "opt", "rep",
# "packed" (repeated, packed on the wire as caffe.proto declares it).  A type that is not a scalar
# name is a message or enum of this package.
MESSAGES: dict[str, list[tuple[str, int, str, str, Any]]] = {
    "BlobShape": [("dim", 1, "packed", "int64", None)],
    "BlobProto": [
        ("shape", 7, "opt", "BlobShape", None),
        ("data", 5, "packed", "float", None),
        ("diff", 6, "packed", "float", None),
        ("double_data", 8, "packed", "double", None),
        ("double_diff", 9, "packed", "double", None),
        ("num", 1, "opt", "int32", 0),
        ("channels", 2, "opt", "int32", 0),
        ("height", 3, "opt", "int32", 0),
        ("width", 4, "opt", "int32", 0),
    ],
    "BlobProtoVector": [("blobs", 1, "rep", "BlobProto", None)],
    "FillerParameter": [
        ("type", 1, "opt", "string", "constant"),
        ("value", 2, "opt", "float", 0.0),
        ("min", 3, "opt", "float", 0.0),
        ("max", 4, "opt", "float", 1.0),
        ("mean", 5, "opt", "float", 0.0),
        ("std", 6, "opt", "float", 1.0),
        ("sparse", 7, "opt", "int32", -1),
        ("variance_norm", 8, "opt", "FillerParameter.VarianceNorm", "FAN_IN"),
    ],
    "NetParameter": [
        ("name", 1, "opt", "string", None),
        ("input", 3, "rep", "string", None),
        ("input_shape", 8, "rep", "BlobShape", None),
        ("input_dim", 4, "rep", "int32", None),
        ("force_backward", 5, "opt", "bool", False),
        ("state", 6, "opt", "NetState", None),
        ("debug_info", 7, "opt", "bool", False),
        ("layer", 100, "rep", "LayerParameter", None),
        ("layers", 2, "rep", "V1LayerParameter", None),
        # NVIDIA Caffe (caffe.proto of NVIDIA/caffe): precision and memory settings, read and
        # ignored (listed in a note): they do not change what the net computes.
        ("default_forward_type", 11, "opt", "Type", "FLOAT"),
        ("default_backward_type", 12, "opt", "Type", "FLOAT"),
        ("default_forward_math", 13, "opt", "Type", "FLOAT"),
        ("default_backward_math", 14, "opt", "Type", "FLOAT"),
        ("global_grad_scale", 15, "opt", "float", 1.0),
        ("global_grad_scale_adaptive", 16, "opt", "bool", False),
        ("default_conv_algos_override", 17, "opt", "string", "-1,-1,-1"),
        ("reduce_buckets", 18, "opt", "int32", 6),
        ("default_cudnn_math_override", 19, "opt", "int32", -1),
        ("eltwise_mem_sharing", 20, "opt", "bool", True),
    ],
    "NetState": [
        ("phase", 1, "opt", "Phase", "TEST"),
        ("level", 2, "opt", "int32", 0),
        ("stage", 3, "rep", "string", None),
    ],
    # SolverParameter (BVLC master), for convert-solver: the SGD solver's fields; inline nets
    # (net_param, train_net_param, test_net_param) are left out on purpose, so they are refused.
    "SolverParameter": [
        ("train_net", 1, "opt", "string", None),
        ("test_net", 2, "rep", "string", None),
        ("test_iter", 3, "rep", "int32", None),
        ("test_interval", 4, "opt", "int32", 0),
        ("base_lr", 5, "opt", "float", None),
        ("display", 6, "opt", "int32", None),
        ("max_iter", 7, "opt", "int32", None),
        ("lr_policy", 8, "opt", "string", None),
        ("gamma", 9, "opt", "float", None),
        ("power", 10, "opt", "float", None),
        ("momentum", 11, "opt", "float", None),
        ("weight_decay", 12, "opt", "float", None),
        ("stepsize", 13, "opt", "int32", None),
        ("snapshot", 14, "opt", "int32", 0),
        ("snapshot_prefix", 15, "opt", "string", None),
        ("snapshot_diff", 16, "opt", "bool", False),
        ("solver_mode", 17, "opt", "SolverParameter.SolverMode", "GPU"),
        ("device_id", 18, "opt", "int32", 0),
        ("test_compute_loss", 19, "opt", "bool", False),
        ("random_seed", 20, "opt", "int64", -1),
        ("debug_info", 23, "opt", "bool", False),
        ("net", 24, "opt", "string", None),
        ("train_state", 26, "opt", "NetState", None),
        ("test_state", 27, "rep", "NetState", None),
        ("snapshot_after_train", 28, "opt", "bool", True),
        ("regularization_type", 29, "opt", "string", "L2"),
        ("solver_type", 30, "opt", "SolverParameter.SolverType", "SGD"),
        ("delta", 31, "opt", "float", 1e-08),
        ("test_initialization", 32, "opt", "bool", True),
        ("average_loss", 33, "opt", "int32", 1),
        ("stepvalue", 34, "rep", "int32", None),
        ("clip_gradients", 35, "opt", "float", -1.0),
        ("iter_size", 36, "opt", "int32", 1),
        ("snapshot_format", 37, "opt", "SolverParameter.SnapshotFormat", "BINARYPROTO"),
        ("rms_decay", 38, "opt", "float", 0.99),
        ("momentum2", 39, "opt", "float", 0.999),
        ("type", 40, "opt", "string", "SGD"),
        ("layer_wise_reduce", 41, "opt", "bool", True),
        ("weights", 42, "rep", "string", None),
    ],
    "NetStateRule": [
        ("phase", 1, "opt", "Phase", None),
        ("min_level", 2, "opt", "int32", None),
        ("max_level", 3, "opt", "int32", None),
        ("stage", 4, "rep", "string", None),
        ("not_stage", 5, "rep", "string", None),
    ],
    "ParamSpec": [
        ("name", 1, "opt", "string", None),
        ("share_mode", 2, "opt", "ParamSpec.DimCheckMode", None),
        ("lr_mult", 3, "opt", "float", 1.0),
        ("decay_mult", 4, "opt", "float", 1.0),
    ],
    "LayerParameter": [
        ("name", 1, "opt", "string", None),
        ("type", 2, "opt", "string", None),
        ("bottom", 3, "rep", "string", None),
        ("top", 4, "rep", "string", None),
        ("phase", 10, "opt", "Phase", None),
        ("loss_weight", 5, "rep", "float", None),
        ("param", 6, "rep", "ParamSpec", None),
        ("blobs", 7, "rep", "BlobProto", None),
        ("propagate_down", 11, "rep", "bool", None),
        ("include", 8, "rep", "NetStateRule", None),
        ("exclude", 9, "rep", "NetStateRule", None),
        ("transform_param", 100, "opt", "TransformationParameter", None),
        ("loss_param", 101, "opt", "LossParameter", None),
        ("accuracy_param", 102, "opt", "AccuracyParameter", None),
        ("batch_norm_param", 139, "opt", "BatchNormParameter", None),
        ("bias_param", 141, "opt", "BiasParameter", None),
        ("concat_param", 104, "opt", "ConcatParameter", None),
        ("convolution_param", 106, "opt", "ConvolutionParameter", None),
        ("data_param", 107, "opt", "DataParameter", None),
        ("dropout_param", 108, "opt", "DropoutParameter", None),
        ("eltwise_param", 110, "opt", "EltwiseParameter", None),
        ("flatten_param", 135, "opt", "FlattenParameter", None),
        ("image_data_param", 115, "opt", "ImageDataParameter", None),
        ("inner_product_param", 117, "opt", "InnerProductParameter", None),
        ("input_param", 143, "opt", "InputParameter", None),
        ("lrn_param", 118, "opt", "LRNParameter", None),
        ("pooling_param", 121, "opt", "PoolingParameter", None),
        ("relu_param", 123, "opt", "ReLUParameter", None),
        ("scale_param", 142, "opt", "ScaleParameter", None),
        ("softmax_param", 125, "opt", "SoftmaxParameter", None),
        ("sigmoid_param", 124, "opt", "SigmoidParameter", None),
        ("reshape_param", 133, "opt", "ReshapeParameter", None),
        ("python_param", 130, "opt", "PythonParameter", None),
        # The segmentation forks' ``BN`` layer (yjxiong/caffe numbering; PSPNet, TSN, SegNet).
        ("bn_param", 137, "opt", "BNParameter", None),
        # NVIDIA Caffe: per-layer precision (ignored, listed in a note).
        ("forward_type", 145, "opt", "Type", "FLOAT"),
        ("backward_type", 146, "opt", "Type", "FLOAT"),
        ("forward_math", 147, "opt", "Type", "FLOAT"),
        ("backward_math", 148, "opt", "Type", "FLOAT"),
        ("debug", 149, "opt", "bool", False),
        ("cudnn_math_override", 150, "opt", "int32", -1),
    ],
    "SigmoidParameter": [("engine", 1, "opt", "SigmoidParameter.Engine", "DEFAULT")],
    "ReshapeParameter": [
        ("shape", 1, "opt", "BlobShape", None),
        ("axis", 2, "opt", "int32", 0),
        ("num_axes", 3, "opt", "int32", -1),
    ],
    "PythonParameter": [
        ("module", 1, "opt", "string", None),
        ("layer", 2, "opt", "string", None),
        ("param_str", 3, "opt", "string", ""),
        ("share_in_parallel", 4, "opt", "bool", False),
    ],
    # Field numbers 1-6 are yjxiong/caffe's (PSPNet's released nets); the names other forks use
    # (hszhao/PSPNet's scale_filler/var_eps/moving_average, SegNet's bn_mode) are text-only
    # aliases here (numbers >= 1000 never occur in a binary file).
    "BNParameter": [
        ("slope_filler", 1, "opt", "FillerParameter", None),
        ("bias_filler", 2, "opt", "FillerParameter", None),
        ("momentum", 3, "opt", "float", 0.9),
        ("eps", 4, "opt", "float", 1e-5),
        ("frozen", 5, "opt", "bool", False),
        ("engine", 6, "opt", "BNParameter.Engine", "DEFAULT"),
        ("scale_filler", 1001, "opt", "FillerParameter", None),
        ("shift_filler", 1002, "opt", "FillerParameter", None),
        ("var_eps", 1003, "opt", "float", 1e-10),
        ("moving_average", 1004, "opt", "bool", False),
        ("decay", 1005, "opt", "float", 0.05),
        ("axis", 1006, "opt", "int32", 1),
        ("bn_mode", 1007, "opt", "BNParameter.BNMode", "LEARN"),
    ],
    "TransformationParameter": [
        ("scale", 1, "opt", "float", 1.0),
        ("mirror", 2, "opt", "bool", False),
        ("crop_size", 3, "opt", "uint32", 0),
        ("mean_file", 4, "opt", "string", None),
        ("mean_value", 5, "rep", "float", None),
        ("force_color", 6, "opt", "bool", False),
        ("force_gray", 7, "opt", "bool", False),
    ],
    "LossParameter": [
        ("ignore_label", 1, "opt", "int32", None),
        ("normalization", 3, "opt", "LossParameter.NormalizationMode", "VALID"),
        ("normalize", 2, "opt", "bool", None),
    ],
    "AccuracyParameter": [
        ("top_k", 1, "opt", "uint32", 1),
        ("axis", 2, "opt", "int32", 1),
        ("ignore_label", 3, "opt", "int32", None),
    ],
    "BatchNormParameter": [
        ("use_global_stats", 1, "opt", "bool", None),
        ("moving_average_fraction", 2, "opt", "float", 0.999),
        ("eps", 3, "opt", "float", 1e-5),
        # NVIDIA Caffe: the layer carries its own scale and bias (blobs 3 and 4).
        ("scale_filler", 5, "opt", "FillerParameter", None),
        ("bias_filler", 6, "opt", "FillerParameter", None),
        ("scale_bias", 7, "opt", "bool", False),
        ("engine", 15, "opt", "BatchNormParameter.Engine", "DEFAULT"),
    ],
    "BiasParameter": [
        ("axis", 1, "opt", "int32", 1),
        ("num_axes", 2, "opt", "int32", 1),
        ("filler", 3, "opt", "FillerParameter", None),
    ],
    "ConcatParameter": [("axis", 2, "opt", "int32", 1), ("concat_dim", 1, "opt", "uint32", 1)],
    "ConvolutionParameter": [
        ("num_output", 1, "opt", "uint32", None),
        ("bias_term", 2, "opt", "bool", True),
        ("pad", 3, "rep", "uint32", None),
        ("kernel_size", 4, "rep", "uint32", None),
        ("stride", 6, "rep", "uint32", None),
        ("dilation", 18, "rep", "uint32", None),
        ("pad_h", 9, "opt", "uint32", 0),
        ("pad_w", 10, "opt", "uint32", 0),
        ("kernel_h", 11, "opt", "uint32", None),
        ("kernel_w", 12, "opt", "uint32", None),
        ("stride_h", 13, "opt", "uint32", None),
        ("stride_w", 14, "opt", "uint32", None),
        ("group", 5, "opt", "uint32", 1),
        ("weight_filler", 7, "opt", "FillerParameter", None),
        ("bias_filler", 8, "opt", "FillerParameter", None),
        ("engine", 15, "opt", "ConvolutionParameter.Engine", "DEFAULT"),
        ("axis", 16, "opt", "int32", 1),
        ("force_nd_im2col", 17, "opt", "bool", False),
        ("cudnn_convolution_algo_seeker", 19, "opt", "ConvolutionParameter.CuDNNConvolutionAlgorithmSeeker", "FINDEX"),  # NVIDIA Caffe: algorithm search only
        ("conv_algos_override", 20, "opt", "string", "-1,-1,-1"),  # NVIDIA Caffe: algorithm choice only
    ],
    "DataParameter": [
        ("source", 1, "opt", "string", None),
        ("batch_size", 4, "opt", "uint32", None),
        ("rand_skip", 7, "opt", "uint32", 0),
        ("backend", 8, "opt", "DataParameter.DB", "LEVELDB"),
        ("scale", 2, "opt", "float", 1.0),
        ("mean_file", 3, "opt", "string", None),
        ("crop_size", 5, "opt", "uint32", 0),
        ("mirror", 6, "opt", "bool", False),
        ("force_encoded_color", 9, "opt", "bool", False),
        ("prefetch", 10, "opt", "uint32", 4),
    ],
    "DropoutParameter": [("dropout_ratio", 1, "opt", "float", 0.5)],
    "EltwiseParameter": [
        ("operation", 1, "opt", "EltwiseParameter.EltwiseOp", "SUM"),
        ("coeff", 2, "rep", "float", None),
        ("stable_prod_grad", 3, "opt", "bool", True),
    ],
    "FlattenParameter": [("axis", 1, "opt", "int32", 1), ("end_axis", 2, "opt", "int32", -1)],
    "ImageDataParameter": [
        ("source", 1, "opt", "string", None),
        ("batch_size", 4, "opt", "uint32", 1),
        ("rand_skip", 7, "opt", "uint32", 0),
        ("shuffle", 8, "opt", "bool", False),
        ("new_height", 9, "opt", "uint32", 0),
        ("new_width", 10, "opt", "uint32", 0),
        ("is_color", 11, "opt", "bool", True),
        ("scale", 2, "opt", "float", 1.0),
        ("mean_file", 3, "opt", "string", None),
        ("crop_size", 5, "opt", "uint32", 0),
        ("mirror", 6, "opt", "bool", False),
        ("root_folder", 12, "opt", "string", ""),
    ],
    "InnerProductParameter": [
        ("num_output", 1, "opt", "uint32", None),
        ("bias_term", 2, "opt", "bool", True),
        ("weight_filler", 3, "opt", "FillerParameter", None),
        ("bias_filler", 4, "opt", "FillerParameter", None),
        ("axis", 5, "opt", "int32", 1),
        ("transpose", 6, "opt", "bool", False),
    ],
    "InputParameter": [("shape", 1, "rep", "BlobShape", None)],
    "LRNParameter": [
        ("local_size", 1, "opt", "uint32", 5),
        ("alpha", 2, "opt", "float", 1.0),
        ("beta", 3, "opt", "float", 0.75),
        ("norm_region", 4, "opt", "LRNParameter.NormRegion", "ACROSS_CHANNELS"),
        ("k", 5, "opt", "float", 1.0),
        ("engine", 6, "opt", "LRNParameter.Engine", "DEFAULT"),
    ],
    "PoolingParameter": [
        ("pool", 1, "opt", "PoolingParameter.PoolMethod", "MAX"),
        ("pad", 4, "opt", "uint32", 0),
        ("pad_h", 9, "opt", "uint32", 0),
        ("pad_w", 10, "opt", "uint32", 0),
        ("kernel_size", 2, "opt", "uint32", None),
        ("kernel_h", 5, "opt", "uint32", None),
        ("kernel_w", 6, "opt", "uint32", None),
        ("stride", 3, "opt", "uint32", 1),
        ("stride_h", 7, "opt", "uint32", None),
        ("stride_w", 8, "opt", "uint32", None),
        ("engine", 11, "opt", "PoolingParameter.Engine", "DEFAULT"),
        ("global_pooling", 12, "opt", "bool", False),
        # BVLC master (2018+); older files never carry it and mean CEIL.
        ("round_mode", 13, "opt", "PoolingParameter.RoundMode", "CEIL"),
        # The forks' (BVLC PR #3057, PyTorch-to-Caffe converters) ``bool ceil_mode = 13``: the same
        # wire number with the opposite meaning of round_mode's values.  Declared text-only here
        # (number 1013); normalise.py turns it into round_mode, and decides how field 13 of a
        # binary file is read (see there).
        ("ceil_mode", 1013, "opt", "bool", True),
        # NVIDIA Caffe declares it; its own pooling layers never read it (sizes still rounded up).
        ("torch_pooling", 40, "opt", "bool", False),
    ],
    "ReLUParameter": [
        ("negative_slope", 1, "opt", "float", 0.0),
        ("engine", 2, "opt", "ReLUParameter.Engine", "DEFAULT"),
    ],
    "ScaleParameter": [
        ("axis", 1, "opt", "int32", 1),
        ("num_axes", 2, "opt", "int32", 1),
        ("filler", 3, "opt", "FillerParameter", None),
        ("bias_term", 4, "opt", "bool", False),
        ("bias_filler", 5, "opt", "FillerParameter", None),
    ],
    "SoftmaxParameter": [
        ("engine", 1, "opt", "SoftmaxParameter.Engine", "DEFAULT"),
        ("axis", 2, "opt", "int32", 1),
    ],
    # The deprecated V1 format (``layers { type: CONVOLUTION ... }``), upgraded on read.
    "V1LayerParameter": [
        ("bottom", 2, "rep", "string", None),
        ("top", 3, "rep", "string", None),
        ("name", 4, "opt", "string", None),
        ("include", 32, "rep", "NetStateRule", None),
        ("exclude", 33, "rep", "NetStateRule", None),
        ("type", 5, "opt", "V1LayerParameter.LayerType", None),
        ("blobs", 6, "rep", "BlobProto", None),
        ("param", 1001, "rep", "string", None),
        ("blob_share_mode", 1002, "rep", "V1LayerParameter.DimCheckMode", None),
        ("blobs_lr", 7, "rep", "float", None),
        ("weight_decay", 8, "rep", "float", None),
        ("loss_weight", 35, "rep", "float", None),
        ("accuracy_param", 27, "opt", "AccuracyParameter", None),
        ("concat_param", 9, "opt", "ConcatParameter", None),
        ("convolution_param", 10, "opt", "ConvolutionParameter", None),
        ("data_param", 11, "opt", "DataParameter", None),
        ("dropout_param", 12, "opt", "DropoutParameter", None),
        ("eltwise_param", 24, "opt", "EltwiseParameter", None),
        ("image_data_param", 15, "opt", "ImageDataParameter", None),
        ("inner_product_param", 17, "opt", "InnerProductParameter", None),
        ("lrn_param", 18, "opt", "LRNParameter", None),
        ("pooling_param", 19, "opt", "PoolingParameter", None),
        ("relu_param", 30, "opt", "ReLUParameter", None),
        ("softmax_param", 39, "opt", "SoftmaxParameter", None),
        ("transform_param", 36, "opt", "TransformationParameter", None),
        ("loss_param", 42, "opt", "LossParameter", None),
    ],
}

# Field numbers the fast caffemodel reader walks by hand (see caffemodel.py).
NET_LAYER_FIELD = 100  # NetParameter.layer
NET_V1_LAYERS_FIELD = 2  # NetParameter.layers
LAYER_BLOBS_FIELD = 7  # LayerParameter.blobs
V1_LAYER_BLOBS_FIELD = 6  # V1LayerParameter.blobs


def _default_text(type_name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if type_name in _TYPES:
        return repr(value) if type_name in ("float", "double") else str(value)
    return str(value)  # enum value name


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(name="resnet_port_caffe.proto", package=PACKAGE, syntax="proto2")
    message_protos: dict[str, descriptor_pb2.DescriptorProto] = {}
    for name, fields in MESSAGES.items():
        msg = fdp.message_type.add(name=name)
        message_protos[name] = msg
        for field_name, number, label, type_name, default in fields:
            field = msg.field.add(name=field_name, number=number)
            field.label = _F.LABEL_OPTIONAL if label == "opt" else _F.LABEL_REPEATED
            if label == "packed":
                field.options.packed = True
            if type_name in _TYPES:
                field.type = _TYPES[type_name]
            elif type_name in ENUMS or type_name == "Phase":
                field.type = _F.TYPE_ENUM
                field.type_name = f".{PACKAGE}.{type_name}"
            else:
                field.type = _F.TYPE_MESSAGE
                field.type_name = f".{PACKAGE}.{type_name}"
            if default is not None and label == "opt" and field.type != _F.TYPE_MESSAGE:
                field.default_value = _default_text(type_name, default)
    for enum_name, (values, parent) in ENUMS.items():
        holder = fdp if parent is None else message_protos[parent]
        enum = holder.enum_type.add(name=enum_name.rsplit(".", 1)[-1])
        for value_name, number in values.items():
            enum.value.add(name=value_name, number=number)
    return fdp


@lru_cache(maxsize=None)
def _classes() -> dict[str, type]:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file_descriptor())
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}")) for name in MESSAGES
    }


def message_class(name: str) -> type:
    """The message class of ``caffe.<name>`` (``NetParameter``, ``BlobProto``, ...)."""
    return _classes()[name]


def NetParameter(**kwargs: Any) -> Any:  # noqa: N802 - named as the message it makes
    return message_class("NetParameter")(**kwargs)


def BlobProto(**kwargs: Any) -> Any:  # noqa: N802
    return message_class("BlobProto")(**kwargs)


__all__ = ["ENUMS", "MESSAGES", "BlobProto", "NetParameter", "message_class"]
