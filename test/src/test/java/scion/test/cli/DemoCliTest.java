package scion.test.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/** {@code scion demo}, the README's first command, runs end to end on the real MiniLM. */
class DemoCliTest {
    @Test
    void demoInspectsConvertsValidatesAndGrows() {
        CliRun r = CliRun.of("demo");
        assertEquals(0, r.code(), r.toString());
        assertTrue(r.out().contains("102 of 102 tensors assigned a role"), r.out());
        assertTrue(r.out().contains("retyped_initializers   101"), r.out());
        assertTrue(r.out().contains("gate       close:0.005: passed"), r.out());
        // step 4: the grown MiniLM; step 5: its hidden states are two copies of the original's
        assertTrue(r.out().contains("hidden         384 → 768"), r.out());
        assertTrue(r.out().contains("→ 2 copies"), r.out());
        assertTrue(r.out().contains("gate       close:0.00001: passed"), r.out());
    }
}
