"""Writes the hand-made seeds of ParserFuzzTest's regression corpus (valid files and malformed ones: truncated files,
lying lengths, overlapping offsets, huge shapes, deep nesting). Run from the repository root; stdlib only."""
import json, os, struct

ROOT = "test/src/test/resources/scion/test/fuzz/ParserFuzzTestInputs"
FIX = "test/src/test/resources/fixtures"


def put(method, name, data):
    d = os.path.join(ROOT, method)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def st(header, data=b"", n=None):
    h = header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(h) if n is None else n) + h + data


def e(dtype, shape, a, b):
    return {"dtype": dtype, "shape": shape, "data_offsets": [a, b]}


# safetensorsFile
S = "safetensorsFile"
put(S, "valid-two", st({"__metadata__": {"format": "pt"}, "a": e("F32", [2], 0, 8), "b": e("BF16", [2, 2], 8, 16)}, bytes(16)))
put(S, "valid-kinds", st({"s": e("F16", [], 0, 2), "z": e("F32", [0, 4], 2, 2), "i": e("I64", [1], 2, 10),
                          "u": e("U8", [3], 10, 13), "bo": e("BOOL", [1], 13, 14)}, bytes(14)))
put(S, "valid-padded", st(b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}    ', bytes(4)))
put(S, "lying-length-2p62", struct.pack("<Q", 1 << 62) + b"{}")
put(S, "lying-length-max", struct.pack("<Q", (1 << 64) - 1) + b"{}")
put(S, "length-past-end", st({"a": e("F32", [1], 0, 4)}, bytes(4), n=4096))
put(S, "truncated-length", b"\x10\x00\x00")
put(S, "truncated-data", st({"a": e("F32", [4], 0, 16)}, bytes(7)))
put(S, "overlap", st({"a": e("F32", [2], 0, 8), "b": e("F32", [2], 4, 12)}, bytes(12)))
put(S, "hole", st({"a": e("F32", [1], 0, 4), "b": e("F32", [1], 8, 12)}, bytes(12)))
put(S, "huge-shape", st({"a": e("F32", [1 << 40, 1 << 40], 0, 8)}, bytes(8)))
put(S, "shape-overflow", st({"a": e("F32", [1 << 62, 1 << 62, 16], 0, 0)}))
put(S, "shape-above-long", st(b'{"a":{"dtype":"F32","shape":[99999999999999999999999],"data_offsets":[0,4]}}', bytes(4)))
put(S, "negative-shape", st({"a": e("F32", [-1], 0, 4)}, bytes(4)))
put(S, "negative-offsets", st({"a": e("F32", [1], -4, 0)}, bytes(4)))
put(S, "offsets-reversed", st({"a": e("F32", [1], 4, 0)}, bytes(4)))
put(S, "offset-huge", st({"a": e("F32", [1], (1 << 63) - 4, (1 << 63) - 1)}, bytes(4)))
put(S, "offset-float", st(b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0.0,4e0]}}', bytes(4)))
put(S, "bad-dtype", st({"a": e("F33", [1], 0, 4)}, bytes(4)))
put(S, "duplicate-key", st(b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', bytes(4)))
put(S, "not-utf8", st(b'{"\xff\xfe":{}}'))
put(S, "deep-nesting", st(b"{" + b'"a":[' * 5000 + b"]" * 5000 + b"}"))
put(S, "metadata-not-string", st({"__metadata__": {"k": 1}}))
put(S, "extra-field", st({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "x": 1}}, bytes(4)))
put(S, "trailing-garbage", st(b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}}', bytes(4)))
with open(os.path.join(FIX, "hf/llama/model.safetensors"), "rb") as f:
    real = f.read()
n = struct.unpack("<Q", real[:8])[0]
put(S, "real-header-truncated-data", real[: 8 + n + 64])

# safetensorsIndex (shards beside it: model-00001-of-00002.safetensors holds a, model-00002-of-00002 holds b)
I = "safetensorsIndex"
one, two = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
put(I, "valid", json.dumps({"metadata": {"total_size": 16}, "weight_map": {"a": one, "b": two}}))
put(I, "valid-no-metadata", json.dumps({"weight_map": {"a": one, "b": two}}))
put(I, "missing-shard", json.dumps({"weight_map": {"a": one, "b": "model-00003-of-00003.safetensors"}}))
put(I, "wrong-shard", json.dumps({"weight_map": {"a": two, "b": one}}))
put(I, "unlisted-tensor", json.dumps({"weight_map": {"a": one}}))
put(I, "traversal", json.dumps({"weight_map": {"a": "../" + one, "b": "/etc/passwd"}}))
put(I, "weight-map-not-object", json.dumps({"weight_map": ["a", one]}))
put(I, "value-not-string", json.dumps({"weight_map": {"a": 1, "b": None}}))
put(I, "total-size-lies", json.dumps({"metadata": {"total_size": 1 << 62}, "weight_map": {"a": one, "b": two}}))
put(I, "total-size-string", json.dumps({"metadata": {"total_size": "x"}, "weight_map": {"a": one, "b": two}}))
put(I, "deep-nesting", '{"weight_map":' + "[" * 5000 + "]" * 5000 + "}")
put(I, "not-json", "weight_map: a")
put(I, "empty", "")
put(I, "duplicate-key", '{"weight_map":{"a":"%s","a":"%s","b":"%s"}}' % (one, two, two))

# configJson
C = "configJson"
for fam in ["llama", "gpt2", "bert"]:
    with open(os.path.join(FIX, "hf", fam, "config.json"), "rb") as f:
        put(C, fam, f.read())
put(C, "deep-nesting", "[" * 5000 + "]" * 5000)
put(C, "big-numbers", '{"hidden_size": 1e400, "num_hidden_layers": 99999999999999999999999, "rms_norm_eps": -1e-400}')
put(C, "wrong-types", '{"hidden_size": "64", "num_hidden_layers": [2], "tie_word_embeddings": "yes", "vocab_size": 3.5}')
put(C, "not-object", "[1,2,3]")
put(C, "empty", "")
put(C, "not-utf8", b'{"hidden_size": "\xff\xfe"}')
put(C, "nested-text-config", '{"text_config": {"hidden_size": 64, "text_config": {"hidden_size": 1}}}')
put(C, "huge-string", '{"model_type": "' + "x" * 100000 + '"}')

# mergeYaml
Y = "mergeYaml"
put(Y, "linear", "merge_method: linear\nmodels:\n  - model: a\n    parameters: {weight: 0.5}\n  - model: b\n    parameters: {weight: 0.5}\ndtype: float32\n")
put(Y, "ties-slices", "merge_method: ties\nbase_model: base\nslices:\n  - sources:\n      - model: a\n        layer_range: [0, 2]\n        parameters: {density: 0.5, weight: [0.1, 0.9]}\n      - model: b\n        layer_range: [0, 2]\nparameters:\n  normalize: true\n")
put(Y, "gradient", "merge_method: slerp\nbase_model: a\nmodels: [{model: a}, {model: b}]\nparameters:\n  t:\n    - filter: self_attn\n      value: [0, 0.5, 1]\n    - value: 0.5\n")
put(Y, "deep-nesting", "a: " + "[" * 5000 + "]" * 5000 + "\n")
put(Y, "deep-block-nesting", "".join("  " * i + "k:\n" for i in range(2000)))
laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    "%s: &%s [%s]\n" % (chr(98 + i), chr(98 + i), ", ".join(["*" + chr(97 + i)] * 9)) for i in range(8))
put(Y, "billion-laughs", laughs + "merge_method: linear\nmodels: [{model: *i}]\n")
put(Y, "java-tag", "merge_method: !!javax.script.ScriptEngineManager [!!java.net.URLClassLoader [[!!java.net.URL [\"http://x\"]]]]\n")
put(Y, "layer-range-huge", "merge_method: passthrough\nslices:\n  - sources:\n      - model: a\n        layer_range: [0, 99999999999999999999]\n")
put(Y, "layer-range-reversed", "merge_method: passthrough\nslices:\n  - sources:\n      - model: a\n        layer_range: [4, -2]\n")
put(Y, "two-docs", "merge_method: linear\nmodels: [{model: a}]\n---\nmerge_method: linear\nmodels: [{model: b}]\n")
put(Y, "tabs", "merge_method:\tlinear\n\tmodels: [a]\n")
put(Y, "not-utf8", b"merge_method: \xff\xfe\n")
put(Y, "scalar", "42\n")
put(Y, "empty", "")

# onnxModel (beside it: model.onnx.data, 64 zero bytes); needs the onnx package (/work/venv)
try:
    import onnx
    from onnx import TensorProto, helper
except ImportError:
    onnx = None
if onnx is not None:
    O = "onnxModel"

    def model(inits):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [8])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [8])
        nodes = [helper.make_node("Add", ["x", inits[0].name], ["y"])]
        g = helper.make_graph(nodes, "g", [x], [y], initializer=inits)
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()

    def ext(name, location, offset, length, dims=(8,), dtype=TensorProto.FLOAT):
        t = TensorProto(name=name, data_type=dtype, dims=list(dims))
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", location), ("offset", offset), ("length", length)):
            if v is not None:
                e = t.external_data.add()
                e.key, e.value = k, str(v)
        return t

    inline = helper.make_tensor("w", TensorProto.FLOAT, [8], [1.0] * 8)
    put(O, "valid-inline", model([inline]))
    put(O, "valid-external", model([ext("w", "model.onnx.data", 0, 32)]))
    put(O, "valid-external-two", model([ext("w", "model.onnx.data", 0, 32), ext("v", "model.onnx.data", 32, 32)]))
    put(O, "external-length-2p62", model([ext("w", "model.onnx.data", 0, 1 << 62)]))
    put(O, "external-offset-past-end", model([ext("w", "model.onnx.data", 60, 32)]))
    put(O, "external-offset-negative", model([ext("w", "model.onnx.data", -32, 32)]))
    put(O, "external-length-mismatch", model([ext("w", "model.onnx.data", 0, 16)]))
    put(O, "external-no-length", model([ext("w", "model.onnx.data", 0, None)]))
    put(O, "external-offset-not-number", model([ext("w", "model.onnx.data", "x", 32)]))
    put(O, "external-traversal", model([ext("w", "../model.onnx.data", 0, 32)]))
    put(O, "external-absolute", model([ext("w", "/etc/passwd", 0, 32)]))
    put(O, "external-missing-file", model([ext("w", "other.data", 0, 32)]))
    put(O, "external-huge-dims", model([ext("w", "model.onnx.data", 0, 32, dims=(1 << 40, 1 << 40))]))
    put(O, "external-dims-overflow", model([ext("w", "model.onnx.data", 0, 32, dims=(1 << 62, 1 << 62, 16))]))
    put(O, "external-negative-dims", model([ext("w", "model.onnx.data", 0, 32, dims=(-8,))]))
    huge = helper.make_tensor("w", TensorProto.FLOAT, [8], [1.0] * 8)
    huge.dims[0] = 1 << 40
    put(O, "inline-huge-dims", model([huge]))
    short = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[8], raw_data=bytes(12))
    put(O, "raw-data-short", model([short]))
    put(O, "bad-dtype", model([TensorProto(name="w", data_type=0, dims=[8], raw_data=bytes(32))]))
    put(O, "float-data-short", model([TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[8], float_data=[1.0])]))
    with open(os.path.join(FIX, "onnx/gpt2.onnx"), "rb") as f:
        put(O, "real-truncated", f.read()[:4096])
    put(O, "not-protobuf", b"\xff" * 64)
    put(O, "empty", b"")
