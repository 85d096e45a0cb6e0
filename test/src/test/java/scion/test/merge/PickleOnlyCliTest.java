package scion.test.merge;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import scion.io.safetensors.SafetensorsReader;
import scion.test.Fixtures;
import scion.test.cli.CliRun;

/**
 * A folder holding only PyTorch pickle weights ({@code pytorch_model.bin}, sharded or not) is refused in one line that
 * names the files and the conversion command; the command, run as printed (when Python with torch and transformers
 * is on the machine), gives a folder that merges like the original safetensors.
 */
class PickleOnlyCliTest {
    @TempDir
    Path tmp;

    final Path ft1 = Fixtures.resource("merge/llama-ft1");

    @Test
    void pickleOnlyFoldersAreRefusedWithTheConversionCommand() throws Exception {
        Path bin = Files.createDirectories(tmp.resolve("bin-only"));
        Files.copy(ft1.resolve("config.json"), bin.resolve("config.json"));
        Path python = Path.of(System.getProperty("scion.python", "/work/venv/bin/python"));
        boolean py = Files.isExecutable(python);
        if (py) {
            // a real torch.save of the fixture's state dict, as pre-safetensors transformers wrote it
            run(
                    python,
                    "import sys, torch; from safetensors.torch import load_file;"
                            + " torch.save(load_file(sys.argv[1] + '/model.safetensors'), sys.argv[2] + '/pytorch_model.bin')",
                    ft1.toString(),
                    bin.toString());
        } else {
            Files.write(bin.resolve("pytorch_model.bin"), new byte[] {(byte) 0x80, 2});
        }
        Path out = tmp.resolve("out");
        CliRun r = CliRun.of("merge", "--method", "linear", bin.toString(), ft1.toString(), out.toString());
        assertEquals(3, r.code(), r.toString());
        System.out.println("pickle-only folder: " + r.err().strip());
        assertEquals(1, r.err().strip().lines().count(), r.err());
        assertTrue(r.err().contains(bin + ": only PyTorch pickle weights in the folder"), r.err());
        assertTrue(r.err().contains("found pytorch_model.bin;"), r.err());
        assertTrue(
                r.err().contains(SafetensorsReader.CONVERT_PICKLES + " " + bin + " " + bin + "-safetensors"), r.err());
        assertFalse(Files.exists(out));
        // sharded: the shards are named (first … last), the index too
        Path sharded = Files.createDirectories(tmp.resolve("sharded"));
        Files.copy(ft1.resolve("config.json"), sharded.resolve("config.json"));
        for (String n : new String[] {
            "pytorch_model-00001-of-00003.bin", "pytorch_model-00002-of-00003.bin", "pytorch_model-00003-of-00003.bin"
        }) {
            Files.write(sharded.resolve(n), new byte[] {(byte) 0x80, 2});
        }
        Files.writeString(sharded.resolve("pytorch_model.bin.index.json"), "{}");
        r = CliRun.of("inspect", sharded.toString());
        assertEquals(3, r.code(), r.toString());
        assertTrue(
                r.err().contains("found pytorch_model-00001-of-00003.bin … pytorch_model-00003-of-00003.bin (3 files)"),
                r.err());
        if (!py) {
            return;
        }
        // the printed command, run as printed: the converted folder holds the same tensors as the original
        String line = r.err().strip();
        String cmd = line.substring(line.indexOf("python -c \"") + "python -c \"".length());
        String code = cmd.substring(0, cmd.indexOf('"'));
        Path conv = tmp.resolve("bin-only-safetensors");
        run(python, code, bin.toString(), conv.toString());
        Map<String, float[]> a = MergeReferenceTest.read(ft1);
        Map<String, float[]> c = MergeReferenceTest.read(conv);
        assertEquals(a.keySet(), c.keySet());
        for (String n : a.keySet()) {
            assertArrayEquals(a.get(n), c.get(n), n);
        }
    }

    private static void run(Path python, String code, String... args) throws Exception {
        List<String> cmd = new ArrayList<>(List.of(python.toString(), "-c", code));
        cmd.addAll(List.of(args));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String log = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertEquals(0, p.waitFor(), log);
    }
}
