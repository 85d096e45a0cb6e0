package scion.io.tensor;

import java.util.Arrays;
import java.util.Locale;
import scion.io.InvalidInputException;

/**
 * An element type of a stored tensor, with its safetensors name and ONNX {@code TensorProto.DataType} code.
 *
 * <p>Safetensors spec: "dtype: one of BOOL, U8, I8, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64, F8_E4M3,
 * F8_E5M2". ONNX codes follow {@code onnx.proto} (FLOAT=1, UINT8=2, INT8=3, INT16=5, INT32=6, INT64=7, BOOL=9,
 * FLOAT16=10, DOUBLE=11, BFLOAT16=16, FLOAT8E4M3FN=17, FLOAT8E5M2=19).
 */
public enum DType {
    F64(8, "F64", 11, true),
    F32(4, "F32", 1, true),
    F16(2, "F16", 10, true),
    BF16(2, "BF16", 16, true),
    F8_E4M3(1, "F8_E4M3", 17, true),
    F8_E5M2(1, "F8_E5M2", 19, true),
    I64(8, "I64", 7, false),
    I32(4, "I32", 6, false),
    I16(2, "I16", 5, false),
    I8(1, "I8", 3, false),
    U8(1, "U8", 2, false),
    BOOL(1, "BOOL", 9, false);

    private final int size;
    private final String safetensorsName;
    private final int onnxCode;
    private final boolean floating;

    DType(int size, String safetensorsName, int onnxCode, boolean floating) {
        this.size = size;
        this.safetensorsName = safetensorsName;
        this.onnxCode = onnxCode;
        this.floating = floating;
    }

    /** Bytes per element. */
    public int size() {
        return size;
    }

    public String safetensorsName() {
        return safetensorsName;
    }

    public int onnxCode() {
        return onnxCode;
    }

    public boolean isFloatingPoint() {
        return floating;
    }

    /** Whether Scion writes this dtype (the 8-bit float formats are read-only). */
    public boolean isWritable() {
        return this != F8_E4M3 && this != F8_E5M2;
    }

    /** The dtype for a safetensors header name; {@code where} names the file and tensor for the error. */
    public static DType fromSafetensors(String name, String where) {
        for (DType d : values()) {
            if (d.safetensorsName.equals(name)) {
                return d;
            }
        }
        throw InvalidInputException.of(where, "unknown dtype", Arrays.toString(values()), "'" + name + "'");
    }

    /** The dtype for an ONNX data-type code; {@code where} names the file and tensor for the error. */
    public static DType fromOnnx(int code, String where) {
        for (DType d : values()) {
            if (d.onnxCode == code) {
                return d;
            }
        }
        throw InvalidInputException.of(
                where, "unsupported ONNX data type", "one of " + Arrays.toString(values()), "code " + code);
    }

    /** Parses a user-facing name such as {@code f16}, {@code bf16}, {@code float32}. */
    public static DType parse(String name) {
        String n = name.toLowerCase(Locale.ROOT);
        switch (n) {
            case "float32":
            case "fp32":
                return F32;
            case "float16":
            case "fp16":
            case "half":
                return F16;
            case "bfloat16":
                return BF16;
            case "float64":
            case "double":
                return F64;
            default:
                for (DType d : values()) {
                    if (d.name().equalsIgnoreCase(n)) {
                        return d;
                    }
                }
                throw InvalidInputException.of("--dtype", "unknown dtype", "f32, f16 or bf16", "'" + name + "'");
        }
    }

    /** Lower-case short name, as used on the command line. */
    public String shortName() {
        return name().toLowerCase(Locale.ROOT);
    }
}
