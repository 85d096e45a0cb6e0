/**
 * Calibration activations: where they are in an ONNX graph ({@link scion.io.runtime.calibration.OnnxTaps}), how
 * they are streamed through ONNX Runtime in batches under a token budget ({@link
 * scion.io.runtime.calibration.Calibration}), and the accumulators the operators use ({@link
 * scion.io.runtime.calibration.ResidualStats} for layer pruning, {@link
 * scion.io.runtime.calibration.LinearInputStats} for activation-aware SVD and neuron importance).
 */
package scion.io.runtime.calibration;
