"""A small TFLite -> ONNX converter for the MediaPipe face models.

Reads the TFLite flatbuffer with the `tflite` package and writes ONNX with the `onnx`
helper API; no TensorFlow. It covers just the operators the MediaPipe face landmark and
BlazeFace (short and full range) models use (see `SUPPORTED_OPS`) and raises on anything else.
Sparse constants (the full-range detector's weights) are expanded to dense ones.

Layout: TFLite is NHWC, ONNX convolutions are NCHW. Every rank-4 activation is kept in
NCHW inside the ONNX graph (so convolutions need no transposes); weights are transposed
once at conversion time. Rank-4 graph inputs are declared NCHW. Ops whose meaning depends on
the memory layout (RESHAPE) transpose back to NHWC first, and rank-4 graph outputs are
transposed back to NHWC so the outputs match TFLite element for element.

Dimension 0 is treated as the batch and made dynamic ("N"); the models are batch-1 in TFLite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx
import tflite
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17; older onnxruntime versions load it
BATCH_DIM = "N"

# TFLite NHWC axis -> our NCHW axis, and the permutations between the two layouts.
NHWC_TO_NCHW_AXIS = (0, 2, 3, 1)
PERM_TO_NCHW = (0, 3, 1, 2)
PERM_TO_NHWC = (0, 2, 3, 1)

_TFLITE_TO_NUMPY = {
    tflite.TensorType.FLOAT32: np.float32,
    tflite.TensorType.FLOAT16: np.float16,
    tflite.TensorType.INT32: np.int32,
    tflite.TensorType.INT64: np.int64,
    tflite.TensorType.INT8: np.int8,
    tflite.TensorType.UINT8: np.uint8,
}
_OP_NAMES = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}


class ConversionError(RuntimeError):
    """The TFLite model uses something this converter does not handle."""


def same_pads(in_size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow 'SAME' padding for one spatial axis, as (before, after).

    TF puts the odd extra pixel at the end (after), which ONNX auto_pad=SAME_UPPER also does,
    but explicit pads keep the graph independent of how a runtime reads auto_pad.
    """
    out_size = -(-in_size // stride)  # ceil division
    effective_kernel = (kernel - 1) * dilation + 1
    total = max((out_size - 1) * stride + effective_kernel - in_size, 0)
    return total // 2, total - total // 2


@dataclass
class _Graph:
    """The ONNX graph being built: nodes, initializers and a name counter."""

    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    _used: set[str] = field(default_factory=set)

    def unique(self, base: str) -> str:
        name, k = base, 1
        while name in self._used:
            k += 1
            name = f"{base}_{k}"
        self._used.add(name)
        return name

    def reserve(self, names) -> None:
        """Keep these names free for later use (the graph outputs)."""
        self._used.update(names)

    def const(self, base: str, value: np.ndarray) -> str:
        name = self.unique(base)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], base: str, **attrs) -> str:
        """Add a single-output node and return the name of its output."""
        out = self.unique(base)
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.unique(f"{base}/{op}"), **attrs))
        return out


class TFLiteConverter:
    """Converts subgraph 0 of one TFLite model; call `convert()` once."""

    def __init__(self, model_bytes: bytes, nchwc_friendly: bool = True):
        # nchwc_friendly: rewrite PRELU and channel PAD into ops that onnxruntime keeps in its
        # blocked CPU layout (see _prelu_as_convs, _channel_padding_as_conv). False keeps the
        # literal PRelu / Pad translation (the build times it as the baseline).
        self.nchwc_friendly = nchwc_friendly
        self.model = tflite.Model.GetRootAsModel(model_bytes, 0)
        if self.model.SubgraphsLength() != 1:
            raise ConversionError("only single-subgraph models are supported")
        self.sg = self.model.Subgraphs(0)
        self.g = _Graph()
        self.consts: dict[int, np.ndarray] = {}  # TFLite tensor index -> constant value (TFLite layout)
        self.values: dict[int, str] = {}  # TFLite tensor index -> ONNX value name (NCHW if rank 4)
        self._handlers: dict[str, Callable[[tflite.Operator, list[int], list[int]], None]] = {
            "DEQUANTIZE": self._dequantize,
            "CONV_2D": self._conv,
            "DEPTHWISE_CONV_2D": self._conv,
            "PRELU": self._prelu,
            "ADD": self._add,
            "MAX_POOL_2D": self._max_pool,
            "PAD": self._pad,
            "RELU": self._relu,
            "RESHAPE": self._reshape,
            "CONCATENATION": self._concat,
            "DENSIFY": self._densify,
            "RESIZE_BILINEAR": self._resize_bilinear,
            "DEPTH_TO_SPACE": self._depth_to_space,
        }

    # ---- tensors -----------------------------------------------------------------------------

    def _tensor(self, idx: int) -> tflite.Tensor:
        return self.sg.Tensors(idx)

    def _name(self, idx: int) -> str:
        return self._tensor(idx).Name().decode()

    def _shape(self, idx: int) -> list[int]:
        t = self._tensor(idx)
        return [int(d) for d in t.ShapeAsNumpy()] if t.ShapeLength() else []

    def _buffer_value(self, idx: int) -> np.ndarray | None:
        """The constant stored in the model for tensor `idx`, or None for an activation."""
        t = self._tensor(idx)
        data = self.model.Buffers(t.Buffer()).DataAsNumpy()
        if isinstance(data, int) or data.size == 0:  # the flatbuffer reader returns 0 for "no data"
            return None
        dtype = _TFLITE_TO_NUMPY.get(t.Type())
        if dtype is None:
            raise ConversionError(f"tensor {self._name(idx)}: unsupported type {t.Type()}")
        values = np.frombuffer(data.tobytes(), dtype=dtype)
        if t.Sparsity() is not None:  # stored compressed; DENSIFY hands on the dense tensor
            return densify(values, t.Sparsity(), self._shape(idx))
        return values.reshape(self._shape(idx))

    def _const(self, idx: int) -> np.ndarray:
        if idx not in self.consts:
            raise ConversionError(f"tensor {self._name(idx)} must be a constant")
        return self.consts[idx]

    def _value(self, idx: int) -> str:
        """ONNX name of tensor `idx` (rank-4 activations are NCHW)."""
        if idx in self.values:
            return self.values[idx]
        if idx in self.consts:  # a constant used as an activation operand
            value = self.consts[idx]
            if value.ndim == 4:
                value = value.transpose(PERM_TO_NCHW)
            self.values[idx] = self.g.const(self._name(idx), value)
            return self.values[idx]
        raise ConversionError(f"tensor {self._name(idx)} is used before it is produced")

    def _set(self, idx: int, onnx_name: str) -> None:
        self.values[idx] = onnx_name

    @staticmethod
    def _options(op: tflite.Operator, cls: type) -> object:
        table = op.BuiltinOptions()
        if table is None:
            raise ConversionError(f"missing {cls.__name__}")
        opts = cls()
        opts.Init(table.Bytes, table.Pos)
        return opts

    def _activation(self, x: str, fused: int, base: str) -> str:
        """Apply a TFLite fused activation function."""
        act = tflite.ActivationFunctionType
        if fused == act.NONE:
            return x
        if fused == act.RELU:
            return self.g.node("Relu", [x], base)
        if fused == act.RELU6:
            lo = self.g.const(f"{base}/zero", np.array(0.0, np.float32))
            hi = self.g.const(f"{base}/six", np.array(6.0, np.float32))
            return self.g.node("Clip", [x, lo, hi], base)
        if fused == act.TANH:
            return self.g.node("Tanh", [x], base)
        raise ConversionError(f"unsupported fused activation {fused}")

    # ---- operators ---------------------------------------------------------------------------

    def _dequantize(self, op, ins, outs) -> None:
        # fp16 (or int8) weights: fold into fp32 constants, nothing is emitted.
        q = self._const(ins[0])
        if q.dtype == np.float16:
            self.consts[outs[0]] = q.astype(np.float32)
            return
        qp = self._tensor(ins[0]).Quantization()
        scale, zero = qp.ScaleAsNumpy(), qp.ZeroPointAsNumpy()
        axis_shape = [1] * q.ndim
        if np.size(scale) > 1:
            axis_shape[qp.QuantizedDimension()] = -1
        scale = np.asarray(scale, np.float32).reshape(axis_shape)
        zero = np.asarray(zero, np.float32).reshape(axis_shape)
        self.consts[outs[0]] = ((q.astype(np.float32) - zero) * scale).astype(np.float32)

    def _densify(self, op, ins, outs) -> None:
        # The sparse weights were expanded when the constants were read: nothing is emitted.
        self.consts[outs[0]] = self._const(ins[0])

    def _resize_bilinear(self, op, ins, outs) -> None:
        opts = self._options(op, tflite.ResizeBilinearOptions)
        if opts.AlignCorners():
            raise ConversionError("RESIZE_BILINEAR with align_corners is not supported")
        _, in_h, in_w, _ = self._shape(ins[0])
        _, out_h, out_w, _ = self._shape(outs[0])
        base = self._name(outs[0])
        # Scales rather than sizes: the batch dimension is dynamic. TensorFlow's half-pixel
        # centres are ONNX's half_pixel (both clamp below 0 to the first pixel).
        scales = self.g.const(f"{base}/scales", np.array([1, 1, out_h / in_h, out_w / in_w], np.float32))
        mode = "half_pixel" if opts.HalfPixelCenters() else "asymmetric"
        self._set(outs[0], self.g.node("Resize", [self._value(ins[0]), "", scales], base,
                                       mode="linear", coordinate_transformation_mode=mode))

    def _depth_to_space(self, op, ins, outs) -> None:
        opts = self._options(op, tflite.DepthToSpaceOptions)
        # TensorFlow's DEPTH_TO_SPACE orders the moved channels depth-column-row, ONNX's DCR mode.
        self._set(outs[0], self.g.node("DepthToSpace", [self._value(ins[0])], self._name(outs[0]),
                                       blocksize=opts.BlockSize(), mode="DCR"))

    def _conv(self, op, ins, outs) -> None:
        code = self._op_name(op)
        depthwise = code == "DEPTHWISE_CONV_2D"
        opts = self._options(op, tflite.DepthwiseConv2DOptions if depthwise else tflite.Conv2DOptions)
        weight = self._const(ins[1])
        _, in_h, in_w, in_c = self._shape(ins[0])
        if depthwise:
            # TFLite [1, KH, KW, C*M] -> ONNX [C*M, 1, KH, KW] with one group per input channel.
            kernel = weight.transpose(3, 0, 1, 2)
            group = in_c
        else:
            kernel = weight.transpose(0, 3, 1, 2)  # OHWI -> OIHW
            group = 1
        kh, kw = kernel.shape[2:]
        strides = [opts.StrideH(), opts.StrideW()]
        dilations = [opts.DilationHFactor(), opts.DilationWFactor()]
        if opts.Padding() == tflite.Padding.SAME:
            top, bottom = same_pads(in_h, kh, strides[0], dilations[0])
            left, right = same_pads(in_w, kw, strides[1], dilations[1])
        else:
            top = bottom = left = right = 0
        base = self._name(outs[0])
        inputs = [self._value(ins[0]), self.g.const(f"{base}/weight", kernel)]
        if len(ins) > 2 and ins[2] >= 0:
            inputs.append(self.g.const(f"{base}/bias", self._const(ins[2])))
        y = self.g.node(
            "Conv", inputs, base,
            kernel_shape=[kh, kw], strides=strides, dilations=dilations,
            pads=[top, left, bottom, right], group=group,
        )
        self._set(outs[0], self._activation(y, opts.FusedActivationFunction(), base))

    def _prelu(self, op, ins, outs) -> None:
        alpha = self._const(ins[1]).astype(np.float32)  # NHWC without the batch, e.g. [1, 1, C]
        base = self._name(outs[0])
        per_channel = alpha.size == alpha.shape[-1]
        if self.nchwc_friendly and per_channel:
            self._set(outs[0], self._prelu_as_convs(self._value(ins[0]), alpha.reshape(-1), base))
            return
        # Literal PRelu: give alpha the NCHW broadcast shape, e.g. [C, 1, 1] (ONNX PRelu
        # broadcasts alpha against X unidirectionally).
        alpha = alpha.reshape((1,) * (4 - alpha.ndim) + alpha.shape).transpose(PERM_TO_NCHW)[0]
        self._set(outs[0], self.g.node("PRelu", [self._value(ins[0]), self.g.const(f"{base}/alpha", alpha)], base))

    def _prelu_as_convs(self, x: str, alpha: np.ndarray, base: str) -> str:
        """PReLU written with ops that onnxruntime keeps in its blocked (NCHWc) CPU layout.

        onnxruntime's NCHWc transformer handles Conv, Relu, Add, MaxPool and Concat but not
        PRelu, so a PRelu node forces a reorder to plain NCHW and back around it, and the
        residual Add before it can no longer be fused into the convolution. In the landmark
        model that made PRelu plus reorders ~60% of the run time. Identities used (per channel):

            PReLU(x) = x + Relu((alpha - 1) * x)          if alpha <= 1
            PReLU(x) = x + (1 - alpha) * Relu(-x)         for any alpha

        where `s * x` is a depthwise 1x1 Conv (onnxruntime fuses the Relu into it). The first
        form (one conv) is used when every alpha of the layer is <= 1, else the second (two
        convs). Both are exact up to float rounding (~1e-7 relative).
        """
        channels = alpha.size

        def depthwise_scale(v: str, scale: np.ndarray, name: str) -> str:
            weight = self.g.const(f"{base}/{name}", scale.reshape(channels, 1, 1, 1).astype(np.float32))
            return self.g.node("Conv", [v, weight], f"{base}/{name}", kernel_shape=[1, 1], group=channels)

        if alpha.max() <= 1.0:
            negative_part = self.g.node("Relu", [depthwise_scale(x, alpha - 1.0, "alpha_minus_1")], f"{base}/relu")
        else:
            relu_neg = self.g.node("Relu", [depthwise_scale(x, -np.ones(channels, np.float32), "negate")], f"{base}/relu")
            negative_part = depthwise_scale(relu_neg, 1.0 - alpha, "one_minus_alpha")
        return self.g.node("Add", [x, negative_part], base)

    def _add(self, op, ins, outs) -> None:
        opts = self._options(op, tflite.AddOptions)
        operands = []
        for i in ins[:2]:
            if i in self.consts and self.consts[i].ndim == 1:
                # A per-channel vector broadcasts over the last (channel) axis in NHWC.
                operands.append(self.g.const(f"{self._name(i)}/nchw", self.consts[i].reshape(-1, 1, 1)))
            else:
                operands.append(self._value(i))
        base = self._name(outs[0])
        y = self.g.node("Add", operands, base)
        self._set(outs[0], self._activation(y, opts.FusedActivationFunction(), base))

    def _max_pool(self, op, ins, outs) -> None:
        opts = self._options(op, tflite.Pool2DOptions)
        _, in_h, in_w, _ = self._shape(ins[0])
        kh, kw = opts.FilterHeight(), opts.FilterWidth()
        strides = [opts.StrideH(), opts.StrideW()]
        if opts.Padding() == tflite.Padding.SAME:
            # ONNX MaxPool ignores padded cells, as TF does.
            top, bottom = same_pads(in_h, kh, strides[0])
            left, right = same_pads(in_w, kw, strides[1])
        else:
            top = bottom = left = right = 0
        base = self._name(outs[0])
        y = self.g.node(
            "MaxPool", [self._value(ins[0])], base,
            kernel_shape=[kh, kw], strides=strides, pads=[top, left, bottom, right],
        )
        self._set(outs[0], self._activation(y, opts.FusedActivationFunction(), base))

    def _pad(self, op, ins, outs) -> None:
        paddings = self._const(ins[1]).astype(np.int64)  # [rank, 2] as (before, after)
        base = self._name(outs[0])
        if self.nchwc_friendly and self._is_channel_padding(paddings):
            self._set(outs[0], self._channel_padding_as_conv(ins[0], int(paddings[3, 1]), base))
            return
        if paddings.shape[0] == 4:
            paddings = paddings[list(PERM_TO_NCHW)]
        pads = np.concatenate([paddings[:, 0], paddings[:, 1]])
        self._set(outs[0], self.g.node("Pad", [self._value(ins[0]), self.g.const(f"{base}/pads", pads)], base, mode="constant"))

    @staticmethod
    def _is_channel_padding(paddings: np.ndarray) -> bool:
        """True for a rank-4 PAD that only appends zero channels (NHWC last axis, after)."""
        if paddings.shape != (4, 2):
            return False
        others = paddings.copy()
        others[3, 1] = 0
        return not others.any() and paddings[3, 1] > 0

    def _channel_padding_as_conv(self, idx: int, extra: int, base: str) -> str:
        """Zero channel padding (BlazeFace / face mesh residual shortcuts) as a 1x1 Conv.

        The conv weight is an identity matrix with `extra` zero rows appended: exact, and unlike
        Pad it stays in onnxruntime's NCHWc layout, so the following residual Add fuses into the
        convolutions instead of forcing reorders to NCHW and back (PAD has no constant_values
        input, so the padding value is 0).
        """
        channels = self._shape(idx)[3]
        weight = np.zeros((channels + extra, channels, 1, 1), np.float32)
        weight[np.arange(channels), np.arange(channels), 0, 0] = 1.0
        return self.g.node("Conv", [self._value(idx), self.g.const(f"{base}/identity", weight)], base, kernel_shape=[1, 1])

    def _relu(self, op, ins, outs) -> None:
        self._set(outs[0], self.g.node("Relu", [self._value(ins[0])], self._name(outs[0])))

    def _reshape(self, op, ins, outs) -> None:
        # RESHAPE is defined on the NHWC memory order: go back to NHWC first.
        base = self._name(outs[0])
        x = self._value(ins[0])
        if len(self._shape(ins[0])) == 4:
            x = self.g.node("Transpose", [x], f"{base}/to_nhwc", perm=list(PERM_TO_NHWC))
        shape = list(self._shape(outs[0]))
        if shape[0] != 1:
            raise ConversionError(f"{base}: reshape must keep a batch of 1 in dim 0")
        shape[0] = 0  # ONNX Reshape: 0 copies the input's (dynamic) batch dimension
        y = self.g.node("Reshape", [x, self.g.const(f"{base}/shape", np.array(shape, np.int64))], base)
        if len(shape) == 4:
            y = self.g.node("Transpose", [y], f"{base}/to_nchw", perm=list(PERM_TO_NCHW))
        self._set(outs[0], y)

    def _concat(self, op, ins, outs) -> None:
        opts = self._options(op, tflite.ConcatenationOptions)
        rank = len(self._shape(outs[0]))
        axis = opts.Axis() % rank
        if rank == 4:
            axis = NHWC_TO_NCHW_AXIS[axis]
        base = self._name(outs[0])
        y = self.g.node("Concat", [self._value(i) for i in ins], base, axis=axis)
        self._set(outs[0], self._activation(y, opts.FusedActivationFunction(), base))

    # ---- driver ------------------------------------------------------------------------------

    def _op_name(self, op: tflite.Operator) -> str:
        code = self.model.OperatorCodes(op.OpcodeIndex())
        # Newer files keep codes > 127 in BuiltinCode, older ones in DeprecatedBuiltinCode.
        return _OP_NAMES.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")

    def _value_info(self, idx: int, name: str, layout_nchw: bool) -> onnx.ValueInfoProto:
        shape: list[int | str] = list(self._shape(idx))
        if layout_nchw and len(shape) == 4:
            shape = [shape[p] for p in PERM_TO_NCHW]
        shape[0] = BATCH_DIM
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)

    def convert(self, graph_name: str) -> onnx.ModelProto:
        """Build the ONNX model: rank-4 inputs NCHW, outputs in TFLite (NHWC) layout."""
        for idx in range(self.sg.TensorsLength()):
            value = self._buffer_value(idx)
            if value is not None:
                self.consts[idx] = value

        # Reserve the output names so that intermediate values never take them.
        self.g.reserve(self._name(idx) for idx in self.sg.OutputsAsNumpy())
        inputs = []
        for idx in self.sg.InputsAsNumpy():
            name = self.g.unique(self._name(idx))
            self._set(idx, name)
            inputs.append(self._value_info(idx, name, layout_nchw=True))

        for k in range(self.sg.OperatorsLength()):
            op = self.sg.Operators(k)
            code = self._op_name(op)
            handler = self._handlers.get(code)
            if handler is None:
                raise ConversionError(f"operator {code} is not supported")
            handler(op, [int(i) for i in op.InputsAsNumpy()], [int(i) for i in op.OutputsAsNumpy()])

        outputs = []
        for idx in self.sg.OutputsAsNumpy():
            value, name = self._value(idx), self._name(idx)
            if len(self._shape(idx)) == 4:  # hand rank-4 results back in TFLite's NHWC layout
                value = self.g.node("Transpose", [value], f"{name}/to_nhwc", perm=list(PERM_TO_NHWC))
            self.g.nodes.append(helper.make_node("Identity", [value], [name], name=self.g.unique(f"{name}/out")))
            outputs.append(self._value_info(idx, name, layout_nchw=False))

        graph = helper.make_graph(self.g.nodes, graph_name, inputs, outputs, self.g.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="models/tflite_to_onnx.py")
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model, full_check=True)
        return model


SUPPORTED_OPS = ("DEQUANTIZE", "CONV_2D", "DEPTHWISE_CONV_2D", "PRELU", "ADD", "MAX_POOL_2D", "PAD", "RELU",
                 "RESHAPE", "CONCATENATION", "DENSIFY", "RESIZE_BILINEAR", "DEPTH_TO_SPACE")

_DENSE, _SPARSE_CSR = 0, 1


def _index_vector(dim: "tflite.DimensionMetadata", which: str) -> np.ndarray:
    """A CSR dimension's segments or indices (a flatbuffer union of int32/uint16/uint8 vectors)."""
    kind = getattr(dim, f"Array{which}Type")()
    table = getattr(dim, f"Array{which}")()
    vector = {1: tflite.Int32Vector, 2: tflite.Uint16Vector, 3: tflite.Uint8Vector}.get(kind)
    if vector is None or table is None:
        raise ConversionError(f"unsupported sparse index vector type {kind}")
    v = vector()
    v.Init(table.Bytes, table.Pos)
    return np.asarray(v.ValuesAsNumpy()).astype(np.int64)


def densify(values: np.ndarray, sparsity: "tflite.SparsityParameters", shape: list[int]) -> np.ndarray:
    """Expand a TFLite sparse constant to its dense ``shape``.

    TFLite stores such a tensor as its non-zero ``values`` plus one metadata entry per dimension,
    visited in ``traversal_order``: a dense dimension enumerates all its positions, a CSR one lists
    ``segments`` (where each parent's run starts) and ``indices`` (the positions present). Blocked
    dimensions (``block_map``) come after the tensor's own and multiply into the dimension they
    split. A value's position in ``values`` is its flat position in that traversal.
    """
    rank = len(shape)
    order = [int(i) for i in sparsity.TraversalOrderAsNumpy()] if sparsity.TraversalOrderLength() else list(range(rank))
    block_map = [int(i) for i in sparsity.BlockMapAsNumpy()] if sparsity.BlockMapLength() else []
    dims = [sparsity.DimMetadata(k) for k in range(sparsity.DimMetadataLength())]
    csr = {k: (_index_vector(d, "Segments"), _index_vector(d, "Indices"))
           for k, d in enumerate(dims) if d.Format() == _SPARSE_CSR}
    block_sizes = {block_map[b]: dims[order.index(rank + b)].DenseSize() for b in range(len(block_map))}
    dense = np.zeros(shape, values.dtype)
    coords = [0] * len(order)

    def walk(level: int, position: int) -> None:
        if level == len(order):
            index = list(coords[:rank])
            for b, d in enumerate(block_map):
                index[d] = index[d] * block_sizes[d] + coords[rank + b]
            dense[tuple(index)] = values[position]
            return
        if dims[level].Format() == _DENSE:
            size = dims[level].DenseSize()
            for i in range(size):
                coords[order[level]] = i
                walk(level + 1, position * size + i)
        else:
            segments, indices = csr[level]
            for j in range(segments[position], segments[position + 1]):
                coords[order[level]] = int(indices[j])
                walk(level + 1, j)

    walk(0, 0)
    return dense


def convert(model_bytes: bytes, graph_name: str = "tflite", nchwc_friendly: bool = True) -> onnx.ModelProto:
    """Convert a TFLite flatbuffer to an ONNX model (see the module docstring for layouts)."""
    return TFLiteConverter(model_bytes, nchwc_friendly).convert(graph_name)
