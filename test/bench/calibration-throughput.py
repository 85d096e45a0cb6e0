"""PyTorch side of test/bench/calibration-throughput.sh: a CPU forward of all-MiniLM-L6-v2 with hidden states.

Usage: python calibration-throughput.py MODEL.onnx BATCH SEQ TOKENS THREADS REPEATS

Builds transformers' BertModel from MiniLM's configuration (hidden 384, 6 layers, 12 heads, FFN 1536, vocab 30522,
512 positions, no pooler) and loads the SAME weights from the ONNX file's initializers: parameters kept under their
names as they are; each anonymous MatMul weight (onnx::MatMul_N, stored [in, out]) is named after the module path
of the MatMul node that consumes it (/encoder/layer.0/attention/self/query/MatMul -> encoder.layer.0.attention.
self.query.weight) and transposed, as Scion's OnnxWeightTracer does. Checks that every parameter was loaded and that
last_hidden_state equals ONNX Runtime's output, then times forward(output_hidden_states=True) under
torch.inference_mode() over the same token ids as the Java side (Java's CalibrationThroughputBench.ids), BATCH
sequences of SEQ tokens per call, one untimed warm-up call, torch.set_num_threads(THREADS).
Prints "RESULT torch <rep> <tokens> <seconds> <tok/s>".
"""

import sys
import time

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from transformers import BertConfig, BertModel


def ids(sequences, length):
    s = np.arange(sequences, dtype=np.int64)[:, None]
    t = np.arange(length, dtype=np.int64)[None, :]
    out = 1000 + np.mod(17 + 31 * s + 13 * t + 7 * t * t, 28000)
    out[:, 0] = 101
    out[:, -1] = 102
    return out


def state_dict_from_onnx(path):
    m = onnx.load(path)
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    sd = {}
    for node in m.graph.node:
        if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in inits:
            scope = node.name.strip("/").split("/")[:-1]  # drop the op name
            sd[".".join(scope) + ".weight"] = torch.from_numpy(inits[node.input[1]].T.copy())
    for name, value in inits.items():
        if not name.startswith("onnx::"):
            sd[name] = torch.from_numpy(value.copy())
    return sd


def main():
    path, batch, seq, tokens, threads, repeats = sys.argv[1:7]
    batch, seq, tokens, threads, repeats = int(batch), int(seq), int(tokens), int(threads), int(repeats)
    torch.set_num_threads(threads)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=1536,
        max_position_embeddings=512,
        type_vocab_size=2,
        hidden_act="gelu",
        layer_norm_eps=1e-12,
    )
    model = BertModel(config, add_pooling_layer=False).eval()
    missing, unexpected = model.load_state_dict(state_dict_from_onnx(path), strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    unexpected = [k for k in unexpected if not k.endswith("position_ids")]  # a non-persistent buffer in transformers 5
    if missing or unexpected:
        sys.exit(f"weights do not match: missing {missing}, unexpected {unexpected}")

    all_ids = ids(tokens // seq, seq)
    # Same weights: compare with ONNX Runtime on the first sequence.
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    probe = all_ids[:1, :32]
    feed = {"input_ids": probe, "attention_mask": np.ones_like(probe), "token_type_ids": np.zeros_like(probe)}
    ref = sess.run(["last_hidden_state"], feed)[0]
    del sess
    with torch.inference_mode():
        out = model(input_ids=torch.from_numpy(probe), output_hidden_states=True)
    diff = float(np.abs(out.last_hidden_state.numpy() - ref).max() / np.abs(ref).max())
    print(f"weights loaded from the ONNX initializers; torch vs onnxruntime last_hidden_state: rel {diff:.1e}")
    print(f"torch {torch.__version__}, transformers attention '{model.config._attn_implementation}', threads {threads}")
    if diff > 1e-4:
        sys.exit("PyTorch model does not reproduce the ONNX model")

    batches = [torch.from_numpy(all_ids[i : i + batch]) for i in range(0, len(all_ids), batch)]
    mask = torch.ones_like(batches[0])
    with torch.inference_mode():
        model(input_ids=batches[0], attention_mask=mask, output_hidden_states=True)  # warm-up
        for rep in range(repeats):
            t0 = time.perf_counter()
            n = 0
            for b in batches:
                out = model(input_ids=b, attention_mask=torch.ones_like(b), output_hidden_states=True)
                assert len(out.hidden_states) == 7
                n += b.numel()
            dt = time.perf_counter() - t0
            print(f"RESULT torch {rep} {n} {dt:.4f} {n / dt:.1f}")


if __name__ == "__main__":
    main()
