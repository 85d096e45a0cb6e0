package scion.io.runtime;

import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtProvider;
import ai.onnxruntime.OrtSession;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import scion.io.InvalidInputException;
import scion.io.UnavailableException;

/**
 * Creates ONNX Runtime sessions on a {@link Device}.
 *
 * <p>{@code cpu} uses the default (CPU) execution provider. {@code cuda} appends the CUDA execution provider on device
 * 0 ({@code SessionOptions.addCUDA(0)}); it exists only in the {@code com.microsoft.onnxruntime:onnxruntime_gpu}
 * artifact (Maven profile {@code -Pgpu}) and needs the NVIDIA libraries listed in {@link #CUDA_REQUIREMENTS}. When
 * any of that is missing, {@code cuda} throws an {@link UnavailableException} naming what is missing (the CLI's exit
 * code 5); it never runs on the CPU instead. {@code auto} takes CUDA when it is usable and otherwise the CPU, and says
 * which it used and why in {@link Opened#note()}.
 *
 * <p>The CUDA requirements are those of {@code onnxruntime_gpu} 1.23.2 as published on Maven Central (Linux x64 and
 * Windows x64 only): ONNX Runtime's CUDA provider table lists CUDA 12.x with cuDNN 9.x for every release since 1.19
 * (CUDA minor-version compatibility: any 12.x runtime works; cuDNN 8 does not), and the provider library in the jar,
 * {@code libonnxruntime_providers_cuda.so}, links exactly {@code libcublasLt.so.12, libcublas.so.12, libcurand.so.10,
 * libcufft.so.11, libcudart.so.12, libcudnn.so.9} ({@code readelf -d}), plus the driver's {@code libcuda.so.1} at run
 * time.
 */
public final class SessionFactory {
    private SessionFactory() {}

    /** What {@code --device cuda} needs, as stated in the README. */
    public static final String CUDA_REQUIREMENTS = "the onnxruntime_gpu 1.23.2 build (mvn -Pgpu) with an NVIDIA"
            + " driver (libcuda.so.1), CUDA 12.x (libcudart.so.12, libcublas.so.12, libcublasLt.so.12,"
            + " libcufft.so.11, libcurand.so.10) and cuDNN 9.x (libcudnn.so.9) on the library path";

    /** The shared libraries {@code libonnxruntime_providers_cuda.so} 1.23.2 loads, driver first. */
    static final List<String> CUDA_LIBRARIES = List.of(
            "libcuda.so.1",
            "libcudart.so.12",
            "libcublas.so.12",
            "libcublasLt.so.12",
            "libcufft.so.11",
            "libcurand.so.10",
            "libcudnn.so.9");

    /** Builds a session from prepared options: from a file, or from an in-memory graph. */
    @FunctionalInterface
    public interface Creator {
        OrtSession create(OrtSession.SessionOptions options) throws OrtException;
    }

    /**
     * An open session and the device it runs on.
     *
     * @param session the session (closed with this)
     * @param device {@link Device#CPU} or {@link Device#CUDA}: what was used, never {@code AUTO}
     * @param note how the device was chosen, e.g. {@code "auto: CUDA not used (…)"}; empty when as requested
     */
    public record Opened(OrtSession session, Device device, String note) implements AutoCloseable {
        @Override
        public void close() {
            try {
                session.close();
            } catch (OrtException e) {
                throw new IllegalStateException("cannot close the ONNX Runtime session", e);
            }
        }
    }

    /** Opens an ONNX file (external data is resolved beside it) on {@code device}. */
    public static Opened open(Path onnx, Device device) {
        OrtEnvironment env = OrtEnvironment.getEnvironment();
        String where = onnx.getFileName().toString();
        return open(device, where, opts -> env.createSession(onnx.toString(), opts));
    }

    /**
     * Opens a session on {@code device}.
     *
     * @param where the model's name for messages
     * @param creator makes the session from the options this prepares
     */
    public static Opened open(Device device, String where, Creator creator) {
        switch (device) {
            case CPU:
                return new Opened(createCpu(where, creator), Device.CPU, "");
            case CUDA:
                return new Opened(createCuda(where, creator), Device.CUDA, "");
            case AUTO:
                Problem problem = cudaProblem(false);
                String why;
                if (problem == null) {
                    try {
                        return new Opened(createCuda(where, creator), Device.CUDA, "auto: CUDA available");
                    } catch (UnavailableException e) {
                        why = e.getMessage();
                    }
                } else {
                    why = problem.brief();
                }
                return new Opened(createCpu(where, creator), Device.CPU, "auto: no CUDA (" + why + "), ran on CPU");
            default:
                throw new IllegalArgumentException("unknown device " + device);
        }
    }

    /** Whether this build's ONNX Runtime has the CUDA execution provider compiled in (the -Pgpu build). */
    public static boolean cudaProviderPresent() {
        return OrtEnvironment.getAvailableProviders().contains(OrtProvider.CUDA);
    }

    /**
     * Fails with the standard message when CUDA cannot be used here; returns when it may be (the session creation is
     * the final check).
     */
    public static void requireCuda() {
        Problem problem = cudaProblem(true);
        if (problem != null) {
            throw unavailable(problem.found(), problem.hint());
        }
    }

    private static UnavailableException unavailable(String found, String hint) {
        return new UnavailableException("--device cuda: CUDA is not available; expected " + CUDA_REQUIREMENTS
                + ", found " + found + "; hint: " + hint + ", or run with --device cpu or --device auto");
    }

    /**
     * What stands in the way of CUDA, or {@code null}: the CPU-only build, or (unless {@code providerOnly}) CUDA
     * libraries missing from the library path.
     */
    static Problem cudaProblem(boolean providerOnly) {
        Set<OrtProvider> providers = OrtEnvironment.getAvailableProviders();
        if (!providers.contains(OrtProvider.CUDA)) {
            return new Problem(
                    "CPU-only ONNX Runtime build",
                    "the CPU-only build com.microsoft.onnxruntime:onnxruntime " + ortVersion()
                            + " (execution providers " + providers + ")",
                    "rebuild with -Pgpu");
        }
        if (providerOnly) {
            return null;
        }
        List<String> missing = missingCudaLibraries();
        if (missing.isEmpty()) {
            return null;
        }
        String libs = String.join(", ", missing);
        return new Problem(
                "missing " + libs,
                "onnxruntime_gpu " + ortVersion() + " without " + libs,
                "install the missing NVIDIA libraries or add their folder to LD_LIBRARY_PATH");
    }

    /** Why CUDA cannot be used: a short form for {@code auto}'s note, the full finding, and a hint. */
    record Problem(String brief, String found, String hint) {}

    private static OrtSession createCpu(String where, Creator creator) {
        try (OrtSession.SessionOptions opts = new OrtSession.SessionOptions()) {
            return creator.create(opts);
        } catch (OrtException e) {
            throw cannotLoad(where, e);
        }
    }

    private static OrtSession createCuda(String where, Creator creator) {
        requireCuda();
        try (OrtSession.SessionOptions opts = new OrtSession.SessionOptions()) {
            try {
                opts.addCUDA(0);
            } catch (OrtException e) {
                throw unavailable(cudaFailure(e), CUDA_HINT);
            }
            try {
                return creator.create(opts);
            } catch (OrtException e) {
                String m = String.valueOf(e.getMessage()).toLowerCase(Locale.ROOT);
                if (m.contains("cuda") || m.contains("cudnn") || m.contains("cublas")) {
                    throw unavailable(cudaFailure(e), CUDA_HINT);
                }
                throw cannotLoad(where, e);
            }
        }
    }

    private static final String CUDA_HINT =
            "check the GPU with nvidia-smi and the libraries' folder in LD_LIBRARY_PATH";

    private static String cudaFailure(OrtException e) {
        List<String> missing = missingCudaLibraries();
        return "onnxruntime_gpu " + ortVersion() + " failing with '" + e.getMessage() + "'"
                + (missing.isEmpty() ? "" : " (not on the library path: " + String.join(", ", missing) + ")");
    }

    private static InvalidInputException cannotLoad(String where, OrtException e) {
        return new InvalidInputException(where + ": ONNX Runtime cannot load the model; expected a valid ONNX graph,"
                + " found: " + e.getMessage());
    }

    /** The ONNX Runtime version in use (the jar's native library). */
    public static String ortVersion() {
        try {
            return OrtEnvironment.getEnvironment().getVersion();
        } catch (RuntimeException e) {
            return "unknown version";
        }
    }

    /**
     * The CUDA libraries not found in the dynamic loader's search path ({@code LD_LIBRARY_PATH}, {@code
     * /etc/ld.so.conf.d}, the usual system and CUDA folders). Linux only; elsewhere nothing is reported missing.
     */
    static List<String> missingCudaLibraries() {
        if (!System.getProperty("os.name", "").toLowerCase(Locale.ROOT).contains("linux")) {
            return List.of();
        }
        Set<Path> dirs = librarySearchPath();
        List<String> missing = new ArrayList<>();
        for (String lib : CUDA_LIBRARIES) {
            boolean found = false;
            for (Path d : dirs) {
                if (Files.exists(d.resolve(lib))) {
                    found = true;
                    break;
                }
            }
            if (!found) {
                missing.add(lib);
            }
        }
        return missing;
    }

    private static Set<Path> librarySearchPath() {
        Set<Path> dirs = new LinkedHashSet<>();
        String ld = System.getenv("LD_LIBRARY_PATH");
        if (ld != null) {
            for (String s : ld.split(":")) {
                if (!s.isEmpty()) {
                    dirs.add(Paths.get(s));
                }
            }
        }
        Path confDir = Paths.get("/etc/ld.so.conf.d");
        if (Files.isDirectory(confDir)) {
            try (DirectoryStream<Path> ds = Files.newDirectoryStream(confDir, "*.conf")) {
                for (Path conf : ds) {
                    for (String line : Files.readAllLines(conf, StandardCharsets.UTF_8)) {
                        String t = line.trim();
                        if (t.startsWith("/")) {
                            dirs.add(Paths.get(t));
                        }
                    }
                }
            } catch (IOException | RuntimeException e) {
                // an unreadable loader configuration only makes the report less precise
            }
        }
        for (String s : new String[] {
            "/lib",
            "/usr/lib",
            "/lib64",
            "/usr/lib64",
            "/lib/x86_64-linux-gnu",
            "/usr/lib/x86_64-linux-gnu",
            "/usr/local/cuda/lib64",
            "/usr/local/cuda/targets/x86_64-linux/lib",
            "/usr/lib/wsl/lib"
        }) {
            dirs.add(Paths.get(s));
        }
        return dirs;
    }
}
