package scion.io.runtime;

import java.util.Locale;
import scion.io.InvalidInputException;

/**
 * Where ONNX Runtime executes a model: {@code cpu}, {@code cuda} (the CUDA execution provider of the {@code
 * onnxruntime_gpu} build, Maven profile {@code -Pgpu}) or {@code auto} (CUDA when it is usable, else CPU; the choice
 * is reported). A request for {@code cuda} that cannot be met fails; it never runs on the CPU instead.
 */
public enum Device {
    CPU,
    CUDA,
    AUTO;

    /** The command-line spelling: {@code cpu}, {@code cuda}, {@code auto}. */
    public String id() {
        return name().toLowerCase(Locale.ROOT);
    }

    /** Parses {@code cpu|cuda|auto} (case-insensitive). */
    public static Device parse(String s) {
        for (Device d : values()) {
            if (d.id().equalsIgnoreCase(s.trim())) {
                return d;
            }
        }
        throw InvalidInputException.of("--device", "unknown device", "cpu, cuda or auto", "'" + s + "'");
    }
}
