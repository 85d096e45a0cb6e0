package scion.io.onnx;

/**
 * An ONNX tensor traced back to the Hugging Face (PyTorch) parameter it holds.
 *
 * <p>{@code transposed} is true when the stored tensor is the transpose of the PyTorch parameter: PyTorch exports
 * {@code nn.Linear} as {@code MatMul(x, Wᵀ)} with the folded {@code Wᵀ} stored {@code [in, out]} under an anonymous
 * name such as {@code onnx::MatMul_787}, while {@code weight} is {@code [out, in]}. A tensor that keeps its
 * parameter name is the parameter itself ({@code transposed} false), whatever layout the module uses (GPT-2's
 * {@code Conv1D} is {@code [in, out]} in PyTorch too).
 *
 * @param initializer the tensor's name in the ONNX graph (an initializer, or a Constant node's output)
 * @param hfName the parameter name, e.g. {@code encoder.layer.0.attention.self.query.weight}
 * @param transposed whether the stored tensor is the parameter transposed
 * @param evidence how it was found: {@code named}, {@code node scope /encoder/layer.0/attention/self/query/MatMul},
 *     {@code bias Add encoder.layer.0.attention.self.query.bias}, ...
 */
public record TracedWeight(String initializer, String hfName, boolean transposed, String evidence) {}
