package scion.io.runtime;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeFalse;

import org.junit.jupiter.api.Test;
import scion.io.InvalidInputException;
import scion.io.UnavailableException;

class SessionFactoryTest {

    @Test
    void deviceParsing() {
        assertEquals(Device.CUDA, Device.parse("CUDA"));
        assertEquals("auto", Device.AUTO.id());
        InvalidInputException e = assertThrows(InvalidInputException.class, () -> Device.parse("tpu"));
        assertEquals("--device: unknown device; expected cpu, cuda or auto, found 'tpu'", e.getMessage());
    }

    /** The default build is CPU-only: cuda fails, naming the build, the versions and the libraries it needs. */
    @Test
    void cudaOnTheCpuBuildIsUnavailable() {
        assumeFalse(SessionFactory.cudaProviderPresent(), "the -Pgpu build: covered by the CLI test");
        UnavailableException e = assertThrows(UnavailableException.class, SessionFactory::requireCuda);
        String m = e.getMessage();
        assertTrue(m.startsWith("--device cuda: CUDA is not available; expected the onnxruntime_gpu 1.23.2 build"), m);
        for (String s : new String[] {
            "CUDA 12.x",
            "cuDNN 9.x",
            "libcudnn.so.9",
            "libcublasLt.so.12",
            "libcuda.so.1",
            "found the CPU-only build com.microsoft.onnxruntime:onnxruntime 1.23.2 (execution providers [CPU])",
            "hint: rebuild with -Pgpu, or run with --device cpu or --device auto"
        }) {
            assertTrue(m.contains(s), s + " in: " + m);
        }
        assertTrue(SessionFactory.CUDA_REQUIREMENTS.contains(SessionFactory.ortVersion()), "pinned ORT version");
    }
}
